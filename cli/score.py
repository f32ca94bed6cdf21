"""``hiera-video score``: recompute classification metrics from a saved predictions file."""

from pathlib import Path

import typer

from hiera_video.errors import HieraVideoError


def score(
    predictions: Path = typer.Argument(..., help="Predictions file written by hiera-video eval (.pt)."),
    agg: str = typer.Option(None, "--agg", help="Re-aggregate per-view logits: prob (mean softmax) | logit [default: stored probabilities]."),
    output: Path = typer.Option(None, "--output", help="Folder for metrics.json, per_class.csv, confusion.csv/png."),
    all_classes: bool = typer.Option(False, "--all-classes", help="Show every class, not only the worst and best."),
    top: int = typer.Option(10, "--top", min=0, help="How many worst and best classes to show."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON instead of tables."),
) -> None:
    """Score a predictions file offline: top-1/top-5, mean class accuracy, per-class results, confusion matrix."""
    import torch

    from hiera_video.engine.distributed import World
    from hiera_video.engine.output_lock import output_claim
    from hiera_video.metrics.classification import (
        classification_metrics,
        load_predictions,
        metrics_summary,
        predictions_probs,
        render_metrics,
        to_jsonable,
        write_metrics,
    )
    from hiera_video.report import check_output, console, json_text, safe

    check_output(output, "--output", "dir", inputs=[("PREDICTIONS", predictions)],
                 writes=("metrics.json", "per_class.csv", "confusion.csv", "confusion.png"))
    with output_claim(output, World(), "score"):  # the folder's lock and ownership, before any work
        preds = load_predictions(predictions)
        probs, used = predictions_probs(preds, agg)
        bad = ~torch.isfinite(probs).all(dim=1)  # the file holds finite values; their aggregate must be too
        if bad.any():
            raise HieraVideoError(f"'{predictions}': aggregating its view logits with '{used}' gives NaN or infinite scores for "
                                  f"{int(bad.sum())} of {len(bad)} videos (logits too large?); nothing was scored")
        if int((preds.labels >= 0).sum()) == 0:
            raise HieraVideoError(f"'{predictions}' has no ground-truth labels (all -1, e.g. a test split); nothing to score")
        metrics = classification_metrics(probs, preds.labels, preds.classes)
        views = int(preds.view_logits.shape[1]) if preds.view_logits is not None else preds.meta.get("views")
        extra = {"predictions": str(predictions), "agg": used, "views": views, "meta": preds.meta}
        files = write_metrics(output, metrics, preds.classes, extra=extra) if output is not None else {}
        if as_json:
            print(json_text(to_jsonable({**extra, **metrics_summary(metrics)}), indent=2))
            return
        out, model = console(), preds.meta.get("model")
        title = f"Scores of {Path(predictions).name}" + (f" ({model})" if model else "") + f", aggregation: {used}"
        render_metrics(metrics, out, all_classes=all_classes, k=top, title=title)
        if files:
            out.print("wrote " + ", ".join(safe(p) for p in files.values()), highlight=False, soft_wrap=True)
