"""``hiera-video export``: a deployable classifier (ONNX or torch.export), checked against PyTorch."""

import dataclasses
import json
from pathlib import Path
from typing import Optional

import typer

from hiera_video.cli import options
from hiera_video.errors import HieraVideoError


def export(
    model: Optional[str] = options.model(), weights: Optional[str] = options.weights(),
    labels: Optional[str] = typer.Option(None, help=options.labels_help(
        "Class names written into the sidecar [default: the weights' own]; checked against the weights' as in predict.")),
    fmt: str = typer.Option(..., "--format", "-f", help="onnx | torch-export (.pt2, saved with torch.export.save) | hub "
                            "(a folder: config.json + model.safetensors + README.md, for huggingface-cli upload)."),
    output: Path = typer.Option(..., "--output", "-o", help="File to write (e.g. model.onnx / model.pt2); the sidecar is FILE.json. "
                                "With --format hub: the folder to write."),
    frames: Optional[int] = typer.Option(None, min=1, help="Clip length T of the exported input [default: the model's]."),
    size: Optional[int] = typer.Option(None, min=1, help="Crop size S of the exported input [default: the model's]."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Make the batch dimension dynamic (checked at batch 1 and 3)."),
    opset: Optional[int] = typer.Option(None, min=14, help="ONNX opset [default: 17]."),
    check: bool = typer.Option(True, "--check/--no-check", help="Compare the exported model with PyTorch on a test clip."),
    rtol: float = typer.Option(1e-4, min=0.0, help="Check tolerance, relative to the largest |logit|."),
    allow_random_weights: bool = options.allow_random_weights(),
    as_json: bool = options.as_json("Print the result as JSON to stdout."),
) -> int:
    """Export a classifier taking a normalised clip [B, 3, T, S, S] and returning logits (fp32), or a Hub folder."""
    from hiera_video.jobs.export import FORMATS
    from hiera_video.jobs.export import export as export_model
    from hiera_video.jobs.export import load_for_export
    from hiera_video.report import check_output, console, json_text, safe

    if fmt == "hub":
        return _export_hub(model, weights, labels, output, allow_random_weights, as_json)
    if fmt not in FORMATS:
        raise HieraVideoError(f"unknown --format '{fmt}'; use onnx or torch-export (a file), or hub (a folder)")
    if opset is not None and fmt != "onnx":
        raise HieraVideoError("--opset applies to --format onnx only")
    reads, sidecar = [("--weights", weights), ("--labels", labels)], Path(str(output) + ".json")
    check_output(output, "--output", inputs=reads)
    check_output(sidecar, "--output (its sidecar FILE.json)", inputs=reads)
    _check_sidecar(sidecar)
    out, err = console(stderr=as_json), console(stderr=True)
    clf = load_for_export(model, weights, labels, allow_random_weights)
    err.print(f"exporting {safe(clf.name)} ({fmt}, fp32) to {safe(output)} ...", highlight=False, soft_wrap=True)
    result = export_model(clf, fmt, output, frames, size, dynamic_batch, opset, check, rtol)
    c = result.check
    if as_json:
        print(json_text(dataclasses.asdict(result), indent=2))
    else:
        from rich.table import Table

        t = Table("key", "value", title=f"export {safe(result.path)}", title_justify="left", show_header=False)
        check = (f"{c.runtime}, batch {', '.join(map(str, c.batch_sizes))}: max abs diff {c.max_abs_diff:.3g} (tolerance "
                 f"{c.tolerance:.3g}, max |logit| {c.logit_scale:.3g})" if c.ran else safe(c.note or "not checked"))
        for row in (("format", result.format + (f" (opset {result.opset})" if result.opset else "")),
                    ("model", safe(f"{result.model} ({result.weights or 'random weights'})")),
                    ("input", f"clips float32 {result.input_shape} (normalised, [B, 3, T, H, W])"),
                    ("output", f"logits float32 [B, {result.num_classes}]"), ("sidecar", safe(result.sidecar)), ("check", check)):
            t.add_row(*row)
        out.print(t)
    if c.ran and c.max_abs_diff is not None:
        status = "PASS" if c.ok else "FAIL"
        err.print(f"{status}: max abs diff {c.max_abs_diff:.3g} vs tolerance {c.tolerance:.3g}", highlight=False)
    if not c.ok:
        err.print(f"[red]error:[/] the exported model does not match PyTorch{': ' + safe(c.note) if c.note else ''}",
                  highlight=False, soft_wrap=True)
        return 1
    return 0


def _export_hub(model, weights, labels, output: Path, allow_random_weights: bool, as_json: bool) -> int:
    """``--format hub``: config.json + model.safetensors + README.md in the folder ``output``."""
    from hiera_video.jobs.export import HUB_FILES, export_hub
    from hiera_video.models.load import load
    from hiera_video.report import check_output, console, json_text, safe

    check_output(output, "--output", kind="dir", inputs=[("--weights", weights), ("--labels", labels)], writes=HUB_FILES)
    net, prov = load("classify", model, weights, allow_random=allow_random_weights, labels=labels)
    result = export_hub(net.float().eval(), prov, output)
    if as_json:
        print(json_text(result, indent=2))
    else:
        console(stderr=True).print(f"wrote {safe(output)} ({', '.join(result['files'])}); upload it with: huggingface-cli upload "
                                   f"ORG/NAME {safe(output)} .", highlight=False, soft_wrap=True)
    return 0


def _check_sidecar(side: Path) -> None:
    """The sidecar is a file the user did not name: only an earlier export's sidecar is replaced."""
    if not side.exists():
        return
    try:
        old = json.loads(side.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        old = None
    if not (isinstance(old, dict) and {"format", "input", "output", "preprocessing"} <= old.keys()):
        raise HieraVideoError(f"cannot write --output (its sidecar FILE.json) '{side}': it exists and is not an export sidecar, "
                              "so it is not replaced; move it away or choose another --output")
