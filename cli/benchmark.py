"""``hiera-video benchmark``: measured throughput and peak memory of one model."""

import resource
import time

import typer

from hiera_video.cli import options
from hiera_video.errors import HieraVideoError


def _peak_memory_mb(device) -> tuple[float, str]:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "peak CUDA memory allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak process RSS"  # KiB on Linux


def run_benchmark(model_name: str, batch_size: int, dtype: str, device_name: str, compile: bool, iters: int, warmup: int,
                  frames: int | None = None, size: int | None = None, train: bool = False) -> dict:
    import torch

    from hiera_video.models.factory import create_model, get_spec
    from hiera_video.runtime import autocast, pick_device, resolve_dtype

    spec = get_spec(model_name)
    if frames and spec.kind != "video":  # an image model has no frame axis: never ignore the option silently
        raise HieraVideoError(f"--frames is for video models; {model_name} is an image model (input {'x'.join(map(str, spec.input_size))}): "
                              "leave out --frames, or pick a video model (hiera_*_16x224)")
    device = pick_device(device_name)
    model = create_model(model_name)
    in_size = list(model.input_size)
    if frames:
        in_size[0] = frames
    if size:
        in_size[-2:] = [size, size]
    model.to(device).train(train)
    low = resolve_dtype(dtype, device)
    fn = torch.compile(model) if compile else model
    x = torch.randn(batch_size, 3, *in_size, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step():
        if train:
            with autocast(device, low):
                out = fn(x)
                loss = (out[0] if isinstance(out, tuple) else out).float().mean()
            loss.backward()
        else:
            with torch.inference_mode(), autocast(device, low):
                fn(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    elapsed = time.perf_counter() - t0
    mem, mem_kind = _peak_memory_mb(device)
    return dict(model=model_name, device=str(device), dtype=str(low).replace("torch.", "") if low else "float32",
                batch_size=batch_size, input=list(x.shape[1:]), compile=compile, mode="train" if train else "inference", iters=iters,
                seconds_per_batch=elapsed / iters, throughput=batch_size * iters / elapsed,
                unit="clips" if len(model.input_size) == 3 else "images", peak_memory_mb=round(mem, 1), memory_kind=mem_kind,
                threads=torch.get_num_threads())


def benchmark(
    model: str = options.model("hiera_base_16x224", help="Model name (see 'hiera-video models')."),
    batch_size: int = options.batch_size(1), dtype: str = options.dtype(),
    compile: bool = typer.Option(False, "--compile", help="Run through torch.compile."),
    device: str = options.device(),
    iters: int = typer.Option(5, min=1, help="Timed iterations."),
    warmup: int = typer.Option(1, min=0, help="Untimed warm-up iterations."),
    frames: int = typer.Option(None, min=1, help="Override the number of input frames."),
    size: int = typer.Option(None, min=1, help="Override the input resolution."),
    train: bool = typer.Option(False, "--train", help="Time forward + backward instead of inference."),
    as_json: bool = options.as_json("Print JSON."),
) -> None:
    """Measure clips/s (images/s) and peak memory of a model on random input."""
    from rich.table import Column, Table

    from hiera_video.report import console, json_text, safe

    r = run_benchmark(model, batch_size, dtype, device, compile, iters, warmup, frames, size, train)
    if as_json:
        print(json_text(r))
        return
    t = Table("metric", Column("value", justify="right"), title=f"benchmark: {safe(model)}")
    for row in (("device / dtype", f"{r['device']} / {r['dtype']}" + (" / compiled" if compile else "")), ("mode", r["mode"]),
                ("input", "x".join(map(str, [r["batch_size"], *r["input"]]))), (f"{r['unit']}/s", f"{r['throughput']:.2f}"),
                ("s / batch", f"{r['seconds_per_batch']:.4f}"), (r["memory_kind"], f"{r['peak_memory_mb']:.0f} MiB"),
                ("CPU threads", str(r["threads"]))):
        t.add_row(*row)
    console().print(t)
