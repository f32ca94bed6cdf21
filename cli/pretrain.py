"""``hiera-video pretrain``: sparse MAE pretraining on video (no labels needed)."""

from pathlib import Path
from typing import List, Optional

import typer

from hiera_video.cli import options
from hiera_video.cli.options import config_overrides, print_config

DEFAULT_CONFIG = "pretrain_video"


def pretrain(
    dataset: Optional[str] = options.dataset(help="  (data.dataset)"),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset folder  (data.root)"),
    annotations: Optional[Path] = typer.Option(None, help="Annotation or list file  (data.annotations)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="MAE model name, e.g. mae_hiera_base_16x224  (model.name)"),
    weights: Optional[str] = typer.Option(None, "--weights", "-w", help="Initial weights: zoo tag, URL, hf-hub:ORG/NAME[@REVISION] or path  (model.weights)"),
    mask_ratio: Optional[float] = typer.Option(None, "--mask-ratio", help="Fraction of mask units hidden  (model.mask_ratio)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Run folder  (run.output)"),
    config: Optional[str] = typer.Option(None, "--config", "-c", help=f"YAML file or bundled preset [default: {DEFAULT_CONFIG}]."),
    set_: List[str] = typer.Option([], "--set", help="Override any config key: section.key=value (repeatable)."),
    resume: Optional[str] = typer.Option(None, help="auto (RUN_DIR/last.pt if present) or a checkpoint path."),
    list_configs: bool = typer.Option(False, "--list-configs", help="List the bundled pretraining presets and exit."),
    show_config: bool = typer.Option(False, "--show-config", help="Print every config key with its value and meaning, then exit."),
) -> int:
    """MAE-pretrain a Hiera on videos (sparse encoder, repeated sampling, exact resume, torchrun data parallel).
    Finetune the result with: hiera-video finetune --weights RUN_DIR/last.pt --model hiera_*"""
    if list_configs:
        from hiera_video.config import list_presets

        print("\n".join(p for p in list_presets() if p.startswith("pretrain")))
        return 0
    from hiera_video.jobs.pretrain import load_pretrain_config
    from hiera_video.jobs.pretrain import pretrain as run
    from hiera_video.report import console, safe

    overrides = config_overrides(data=dict(dataset=dataset, root=root, annotations=annotations),
                                 model=dict(name=model, weights=weights), run=dict(output=output))
    if mask_ratio is not None:
        overrides.setdefault("model", {})["mask_ratio"] = mask_ratio
    source = config or DEFAULT_CONFIG
    cfg = load_pretrain_config(source, set_, overrides)
    out = console()
    print_config(cfg, f"configuration ({source})", show_config, out)
    if show_config:
        return 0
    summary = run(cfg, resume=resume, console=out)
    if summary.get("final_loss") is not None:
        out.print(f"final epoch loss {summary['final_loss']:.4f} after {summary['steps']} steps; weights: {safe(summary['checkpoint'])} "
                  f"(finetune with --weights {safe(summary['checkpoint'])} --model {safe(cfg.model.name.removeprefix('mae_'))})",
                  highlight=False, soft_wrap=True)
    return 0
