"""``hiera-video finetune``: the paper's recipes on Kinetics / SSv2, or your own videos."""

from pathlib import Path
from typing import List, Optional

import typer

from hiera_video.cli import options
from hiera_video.cli.options import ALL_KINDS, config_overrides, print_config
from hiera_video.errors import HieraVideoError


def finetune(
    dataset: Optional[str] = options.dataset(ALL_KINDS, help="  (data.dataset)"),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset folder  (data.root)"),
    annotations: Optional[Path] = typer.Option(None, help="Training annotations  (data.annotations)"),
    val_annotations: Optional[Path] = typer.Option(None, help="Validation annotations  (data.val_annotations)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name  (model.name)"),
    weights: Optional[str] = typer.Option(None, "--weights", "-w", help="Initial weights: zoo tag, URL, hf-hub:ORG/NAME[@REVISION] or path  (model.weights)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Run folder  (run.output)"),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="YAML file or bundled preset name (see --list-configs)."),
    set_: List[str] = typer.Option([], "--set", help="Override any config key: section.key=value (repeatable)."),
    resume: Optional[str] = typer.Option(None, help="auto (RUN_DIR/last.pt if present) or a checkpoint path."),
    list_configs: bool = typer.Option(False, "--list-configs", help="List the bundled presets and exit."),
    show_config: bool = typer.Option(False, "--show-config", help="Print every config key with its value and meaning, then exit."),
) -> int:
    """Finetune a Hiera classifier, or an AVA action detector with --dataset ava (exact resume; works under torchrun)."""
    from hiera_video.config import list_presets, load_config
    from hiera_video.report import console, safe

    if list_configs:
        print("\n".join(p for p in list_presets() if not p.startswith("pretrain")))
        return 0
    if config and config.removesuffix(".yaml").startswith("pretrain") and "/" not in config:
        raise HieraVideoError(f"'{config}' is an MAE pretraining preset: run it with hiera-video pretrain --config {config}")
    data = dict(dataset=dataset, root=root, annotations=annotations, val_annotations=val_annotations)
    cfg = load_config(config, set_, config_overrides(data=data, model=dict(name=model, weights=weights), run=dict(output=output)))
    out = console()
    print_config(cfg, "configuration" + (f" ({config})" if config else ""), show_config, out)
    if show_config:
        return 0
    if cfg.data.dataset == "ava":  # an action detector
        from hiera_video.ava.train import finetune_ava as run
    else:
        from hiera_video.jobs.finetune import finetune as run

    final = run(cfg, resume=resume, console=out)
    if final.get("top1") is not None:
        out.print(f"final {final['views']} top-1: {final['top1']:.2f}%  (run folder: {safe(cfg.run.output)})", highlight=False)
    if final.get("mAP") is not None:
        out.print(f"final frame-mAP@0.5: {100 * final['mAP']:.2f}%  (run folder: {safe(cfg.run.output)})", highlight=False)
    return 0

