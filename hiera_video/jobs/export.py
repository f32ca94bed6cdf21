"""Export a video classifier: ONNX or ``torch.export`` (.pt2), checked against PyTorch.

The program maps normalised clips ``float32 [B, 3, T, S, S]`` (see the JSON sidecar) to ``logits [B, classes]``.
Made in fp32 on the CPU with the fused oneDNN kernels off (no ONNX/export lowering), position embeddings
resampled once to the exported grid; the output is compared on test clips (onnxruntime or
``ExportedProgram.module()``, max abs diff <= ``rtol x max|logit| + 1e-6``). The sidecar says how to load it.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from hiera_video import limits
from hiera_video.engine.inference import Classifier, load_classifier
from hiera_video.errors import HieraVideoError, short
from hiera_video.models import fused
from hiera_video.models.posembed import resample_grid
from hiera_video.report import atomic_path, write_json

FORMATS = ("onnx", "torch-export")
DEFAULT_OPSET = 17  # LayerNormalization is a native op from opset 17
INPUT_NAME, OUTPUT_NAME = "clips", "logits"


@dataclass
class ExportCheck:
    ran: bool = False
    ok: bool = True
    batch_sizes: list[int] = field(default_factory=list)
    max_abs_diff: float | None = None
    logit_scale: float | None = None
    tolerance: float | None = None
    runtime: str | None = None
    note: str | None = None


@dataclass
class ExportResult:
    path: str
    sidecar: str
    format: str
    model: str
    weights: str | None
    input_shape: list
    num_classes: int
    opset: int | None
    check: ExportCheck


def with_input_size(model: nn.Module, frames: int, size: int) -> nn.Module:
    """A copy of ``model`` for ``frames x size x size`` clips, position embeddings resampled once to that grid."""
    want = (frames, size, size)
    if tuple(model.input_size) == want:
        return model
    new = type(model)(**{**model.config, "input_size": want})
    sd = model.state_dict()
    grid = [i // s for i, s in zip(want, model.patch_stride)]
    if model.sep_pos_embed:
        sd["pos_embed_spatial"] = resample_grid(sd["pos_embed_spatial"], model.tokens_spatial_shape[1:], grid[1:])
        sd["pos_embed_temporal"] = resample_grid(sd["pos_embed_temporal"], model.tokens_spatial_shape[:1], grid[:1])
    else:
        sd["pos_embed"] = resample_grid(sd["pos_embed"], model.tokens_spatial_shape, grid)
    new.load_state_dict(sd)
    return new.eval()


def _check_size(model: nn.Module, frames: int, size: int) -> None:
    t_unit = model.patch_stride[0] * model.mask_unit_size[0]
    s_unit = model.patch_stride[-1] * model.mask_unit_size[-1]
    if frames < 1 or frames % t_unit or size < 1 or size % s_unit:
        raise HieraVideoError(f"--frames must be a multiple of {t_unit} and --size a multiple of {s_unit}; got {frames} and {size}")


def _check_memory(model: nn.Module, frames: int, size: int, batch: int) -> None:
    """Refuse a ``--frames``/``--size`` whose test clips and first-stage tokens (4 x tokens x embed_dim floats)
    need more memory than the machine has."""
    stride = list(model.patch_stride)
    grid = ([frames // stride[0]] if len(stride) == 3 else []) + [size // stride[-1]] * 2
    dim = int(getattr(model, "config", {}).get("embed_dim", 96))
    nbytes = batch * limits.clip_bytes(frames if len(stride) == 3 else 1, size) + 4.0 * math.prod(grid) * dim * 4
    limits.check_memory(f"--frames {frames} / --size {size}", nbytes,
                        f"{batch} test clip(s) of {frames}x{size}x{size} and {math.prod(grid)} tokens of width {dim}")


def sample_clip(batch: int, frames: int, size: int, seed: int = 0) -> torch.Tensor:
    """A reproducible normalised clip ``[B, 3, T, S, S]``."""
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def export_onnx(model: nn.Module, path: Path, example: torch.Tensor, dynamic_batch: bool, opset: int) -> None:
    try:
        import onnx  # torch's exporter needs it too
    except ImportError:
        raise HieraVideoError("ONNX export needs the onnx package: pip install 'hiera-video[onnx]' (onnx + onnxruntime for "
                              "the check), or use --format torch-export (nothing to install)") from None
    kw = dict(opset_version=opset, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None)
    with torch.no_grad(), fused.disabled(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic
        try:
            torch.onnx.export(model, (example,), str(path), dynamo=False, **kw)
        except TypeError:  # older torch: no ``dynamo`` argument
            torch.onnx.export(model, (example,), str(path), **kw)
    try:
        onnx.checker.check_model(str(path))
    except Exception as e:  # pragma: no cover - exporter bug
        raise HieraVideoError(f"the exported ONNX model does not pass onnx.checker: {short(e, 300)}") from None


def export_program(model: nn.Module, path: Path, example: torch.Tensor, dynamic_batch: bool) -> None:
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    with torch.no_grad(), fused.disabled():
        program = torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes)
    torch.export.save(program, str(path))


def exported_runner(fmt: str, path: str | os.PathLike):
    """A function ``clips [B, 3, T, S, S] -> logits`` running the exported file."""
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(sess.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])
    program = torch.export.load(str(path)).module()

    def run(x):
        with torch.no_grad():
            return program(x)

    return run


def check_export(model: nn.Module, fmt: str, path: Path, frames: int, size: int, batch_sizes: list[int], rtol: float) -> ExportCheck:
    """Compare the exported file with ``model`` (fused kernels off: the same ops) on test clips."""
    if fmt == "onnx":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return ExportCheck(note="onnxruntime is not installed: not checked (pip install onnxruntime)")
    worst, scale, run = 0.0, 0.0, exported_runner(fmt, path)
    for i, b in enumerate(batch_sizes):
        x = sample_clip(b, frames, size, seed=i)
        with torch.no_grad(), fused.disabled():
            ref = model(x)
        got = run(x)
        if tuple(got.shape) != tuple(ref.shape):
            return ExportCheck(True, False, batch_sizes, runtime=fmt, note=f"batch {b}: output shape {tuple(got.shape)}, expected {tuple(ref.shape)}")
        worst = max(worst, float((got.float() - ref).abs().max()))
        scale = max(scale, float(ref.abs().max()))
    tol = rtol * scale + 1e-6
    return ExportCheck(True, worst <= tol, list(batch_sizes), worst, scale, tol, "onnxruntime" if fmt == "onnx" else "torch.export.load(...).module()")


def sidecar(clf: Classifier, fmt: str, frames: int, size: int, dynamic_batch: bool, batch: int, opset: int | None, check: ExportCheck) -> dict:
    proto = clf.protocol(num_frames=frames, crop_size=size).recipe()
    how = ("import onnxruntime as ort; sess = ort.InferenceSession(PATH, providers=['CPUExecutionProvider']); "
           "logits = sess.run(['logits'], {'clips': clips_numpy_float32})[0]" if fmt == "onnx"
           else "import torch; program = torch.export.load(PATH); logits = program.module()(clips)")
    return dict(
        format=fmt, model=clf.name, weights=clf.weights,
        input=dict(name=INPUT_NAME, layout="[B, 3, T, H, W]", dtype="float32",
                   shape=["batch" if dynamic_batch else batch, 3, frames, size, size], dynamic_batch=dynamic_batch),
        output=dict(name=OUTPUT_NAME, layout="[B, num_classes]", dtype="float32", meaning="logits (apply softmax for probabilities)"),
        preprocessing=dict(
            proto, pixel_range="RGB uint8 / 255 -> [0, 1], then (x - mean) / std per channel",
            resize="short side to crop_size (bilinear, antialiased), centre crop crop_size x crop_size",
            frame_sampling=("dense: num_frames frames, one every `stride` frames at target_fps, centred in the video"
                            if proto.get("sampling") == "dense" else "segment: the middle frame of each of num_frames equal segments")),
        labels=list(clf.labels), num_classes=len(clf.labels), opset=opset, torch_version=torch.__version__,
        check=asdict(check), load=how)


def export(clf: Classifier, fmt: str, output: str | os.PathLike, frames: int | None = None, size: int | None = None,
           dynamic_batch: bool = False, opset: int | None = None, check: bool = True, rtol: float = 1e-4) -> ExportResult:
    """Export ``clf`` (fp32 on the CPU) to ``output`` and write the sidecar ``output + '.json'`` (with the check)."""
    if fmt not in FORMATS:
        raise HieraVideoError(f"unknown --format '{fmt}'; use onnx or torch-export")
    if clf.device.type != "cpu" or clf.dtype is not None:
        raise HieraVideoError("export needs the model in fp32 on the CPU (load it with device='cpu', dtype='fp32')")
    output, model = Path(output), clf.model.eval()
    frames, size = frames or clf.clip.num_frames, size or clf.clip.crop_size
    _check_size(model, frames, size)
    _check_memory(model, frames, size, 3 if dynamic_batch else 1)
    model = with_input_size(model, frames, size).float().eval()
    opset = (opset or DEFAULT_OPSET) if fmt == "onnx" else None
    batch = 2 if dynamic_batch else 1  # torch.export specialises a size-1 dimension
    example = sample_clip(batch, frames, size, seed=123)
    try:
        with atomic_path(output, suffix=f".tmp{output.suffix}") as tmp:
            export_onnx(model, tmp, example, dynamic_batch, opset) if fmt == "onnx" else export_program(model, tmp, example, dynamic_batch)
    except HieraVideoError:
        raise
    except Exception as e:
        raise HieraVideoError(f"{fmt} export of {clf.name} failed: {short(e, 300)} (run with --debug for the traceback)") from e
    result_check = (check_export(model, fmt, output, frames, size, [1, 3] if dynamic_batch else [batch], rtol) if check
                    else ExportCheck(note="not checked (--no-check)"))
    side = Path(str(output) + ".json")
    write_json(side, sidecar(clf, fmt, frames, size, dynamic_batch, batch, opset, result_check))
    return ExportResult(str(output), str(side), fmt, clf.name, clf.weights, [("batch" if dynamic_batch else batch), 3, frames, size, size],
                        len(clf.labels), opset, result_check)


def load_for_export(model: str | None, weights: str | None, labels: str | None = None, allow_random_weights: bool = False) -> Classifier:
    """The classifier in fp32 on the CPU (what :func:`export` needs)."""
    return load_classifier(model, weights, labels, device="cpu", dtype="fp32", allow_random_weights=allow_random_weights)


HUB_FILES = ("config.json", "model.safetensors", "README.md")


def export_hub(net: nn.Module, prov, output: str | os.PathLike) -> dict:
    """A Hub-ready folder for ``net`` (provenance ``prov``): ``config.json`` (official constructor arguments, for
    ``Hiera.from_pretrained(DIR)``), ``model.safetensors`` (official keys; model name, labels and clip recipe in its
    metadata) and a ``README.md`` model card; ``--weights DIR`` or ``hf-hub:ORG/NAME`` read it back."""
    from safetensors.torch import save_file

    from hiera_video.models.checkpoints.formats import SAFETENSORS_META_KEY, official_defaults

    out = Path(output)
    if out.exists() and not out.is_dir():
        raise HieraVideoError(f"--output '{out}' is a file; --format hub writes a folder")
    other = sorted(set(os.listdir(out)) - set(HUB_FILES)) if out.is_dir() else []
    if other:
        raise HieraVideoError(f"--output folder '{out}' holds other files ({', '.join(other[:3])}); "
                              "--format hub writes into an empty folder (or over an earlier hub export)")
    out.mkdir(parents=True, exist_ok=True)
    config = getattr(net, "config", None)
    if not isinstance(config, dict):
        raise HieraVideoError(f"{prov.spec.name} has no constructor config to write; --format hub takes Hiera classifiers")
    config = {k: v for k, v in config.items() if k in set(official_defaults(False))}
    labels, recipe = list(prov.labels), prov.clip.recipe()
    extra = {"model": prov.spec.name, "labels": labels, "preprocessing": recipe}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    with atomic_path(out / "model.safetensors", suffix=".tmp.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", SAFETENSORS_META_KEY: json.dumps(extra)})
    write_json(out / "config.json", config)
    with atomic_path(out / "README.md", suffix=".tmp.md") as tmp:
        Path(tmp).write_text(model_card(prov, config, labels, recipe), encoding="utf-8")
    return dict(path=str(out), files=list(HUB_FILES), model=prov.spec.name, weights=prov.source,
                num_classes=len(labels), labels=labels)


def model_card(prov, config: dict, labels: list[str], recipe: dict) -> str:
    """The README.md of a hub export: model, data, run metrics, labels, clip recipe, use, license."""
    meta = prov.meta or {}
    train = meta.get("train_config") if isinstance(meta.get("train_config"), dict) else {}
    data = train.get("data") if isinstance(train.get("data"), dict) else {}
    metrics = {k: v for k, v in meta.items() if k in ("metrics", "best", "best_metric", "val_metrics", "epoch")}
    metrics.update(_run_metrics(prov.source))
    return "\n".join([
        "---", "library_name: hiera-video", "tags:", "- video-classification", "- hiera", "---", "",
        f"# {prov.spec.name}", "",
        f"A Hiera video classifier ({prov.spec.name}, {len(labels)} classes) exported by `hiera-video export --format hub` "
        f"from `{prov.source}`.", "",
        "## Data", "",
        ("Finetuned on: `" + json.dumps(data, sort_keys=True) + "`") if data else "Training data: not recorded in the weights.", "",
        "## Metrics", "",
        ("```json\n" + json.dumps(metrics, indent=2, sort_keys=True, default=str) + "\n```") if metrics
        else "No metrics recorded in the weights.", "",
        "## Labels", "",
        ", ".join(f"`{x}`" for x in labels[:50]) + (f" ... ({len(labels)} in all)" if len(labels) > 50 else ""), "",
        "## Clip recipe", "",
        "```json\n" + json.dumps(recipe, indent=2, sort_keys=True) + "\n```", "",
        "## Use", "",
        "```bash\nhiera-video predict clip.mp4 --weights hf-hub:ORG/NAME   # or --weights THIS_FOLDER\n```", "",
        "With the official package (`pip install hiera-transformer`): `hiera.Hiera.from_pretrained(\"ORG/NAME\")` "
        "(config.json holds its constructor arguments; it returns probabilities in eval mode).", "",
        "Upload: `huggingface-cli upload ORG/NAME THIS_FOLDER .`", "",
        "## License", "",
        "Weights derived from the official Hiera weights are CC-BY-NC-4.0 (non-commercial); check the license of "
        "the weights and data this model was trained from before publishing.", "",
    ])


def _run_metrics(source) -> dict:
    """Scalar results of ``metrics.json`` beside a local weights file (``RUN/best.pt``, by finetune); {} otherwise."""
    if not isinstance(source, str) or not os.path.isfile(source):
        return {}
    try:
        with open(os.path.join(os.path.dirname(os.path.abspath(source)), "metrics.json"), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)} if isinstance(data, dict) else {}
