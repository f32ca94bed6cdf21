"""``hiera-video models``: the model zoo as a table."""

import typer

from hiera_video.errors import HieraVideoError


def count_params(name: str) -> int:
    """Parameter count of ``name`` with its default head (built on the meta device: no memory)."""
    import torch

    from hiera_video.models.factory import build_model
    from hiera_video.models.zoo import MODELS

    with torch.device("meta"):
        model = build_model(MODELS[name])
    return sum(p.numel() for p in model.parameters())


def models(
    kind: str = typer.Option(None, help="Only 'video' or 'image' models."),
    mae: bool = typer.Option(None, "--mae/--no-mae", help="Only MAE (or only classifier) models."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List model variants: parameters, input size, available weights, reported accuracy, licence."""
    from hiera_video.models.factory import list_models
    from hiera_video.models.zoo import MODELS
    from hiera_video.report import console, json_text

    kinds = sorted({spec.kind for spec in MODELS.values()})
    if kind is not None and kind not in kinds:  # an unknown kind is a mistake, not an empty table
        raise HieraVideoError(f"unknown --kind '{kind}'; use one of: {', '.join(kinds)}")
    rows = [dict(name=name, kind=spec.kind, mae=spec.mae, params_m=round(count_params(name) / 1e6, 1), input="x".join(map(str, spec.input_size)),
                 weights={t: dict(url=w.url, dataset=w.dataset, top1=w.top1, license=w.license) for t, w in spec.weights.items()},
                 default_weights=spec.default_weights, note=spec.note)
            for name, spec in ((name, MODELS[name]) for name in list_models(kind=kind, mae=mae))]
    if as_json:
        print(json_text(rows, indent=2))
        return
    from rich.table import Column, Table

    columns = ["name", "kind", "params", "input", "weights (tag: top-1 %)", "licence"]
    table = Table(*[Column(c, justify="right" if c == "params" else "left", no_wrap=True) for c in columns], title="Hiera models")
    for r in rows:
        weights = "\n".join(f"{t}: {w['top1']}" if w["top1"] else t for t, w in r["weights"].items()) or "-"
        licence = next((w["license"] for w in r["weights"].values()), "-")
        table.add_row(r["name"] + "*" * bool(r["note"]), r["kind"] + (" MAE" if r["mae"] else ""), f"{r['params_m']}M", r["input"], weights, licence)
    out = console()
    out.print(table)
    out.print("* this project's own configuration: no official weights exist (random init; train it yourself).")
