"""``hiera-video reconstruct VIDEO``: what an MAE sees and what it fills in."""

from pathlib import Path
from typing import Optional

import typer

from hiera_video.cli import options
from hiera_video.errors import HieraVideoError


def reconstruct(
    video: Path = typer.Argument(..., help="A video file."),
    output: Path = typer.Option(..., "--output", "-o", help="FILE.png (one row per time step) or FILE.gif (animated)."),
    model: Optional[str] = options.model(help="MAE model [default: mae_hiera_base_16x224, or the one a checkpoint names]."),
    weights: Optional[str] = options.weights(help="Zoo tag, URL, hf-hub:ORG/NAME[@REVISION] or checkpoint path (e.g. RUN_DIR/last.pt) [default: the model's official MAE weights]."),
    mask_ratio: Optional[float] = typer.Option(None, "--mask-ratio", min=0.0, max=0.99, help="Fraction of mask units hidden [default: the model's, 0.9 for video]."),
    seed: int = typer.Option(0, min=0, help="Seed of the random mask."),
    all_frames: bool = typer.Option(False, "--all-frames", help="Show every frame (each prediction repeated for both frames of its 2-frame token) instead of the predicted frames only."),
    stride: Optional[int] = typer.Option(None, min=1, help="Frame stride of the clip [default: the checkpoint's, else 4]."),
    scale: Optional[int] = typer.Option(None, min=1, help="Pixel upscale of the figure [default: so a panel is >= 160 px]."),
    frame_ms: int = typer.Option(250, "--frame-ms", min=20, help="GIF: milliseconds per frame."),
    device: str = options.device(), backend: str = options.backend(), allow_random_weights: bool = options.allow_random_weights(),
    as_json: bool = options.as_json("Print the summary as JSON."),
) -> int:
    """Mask a clip at random (seeded), run the MAE and draw original | masked input | reconstruction."""
    from hiera_video.jobs.reconstruct import ReconstructOptions, load_mae, reconstruct_video, save_figure
    from hiera_video.report import check_output, console, json_text, safe

    o = ReconstructOptions.of(locals())  # checked before any work
    check_output(output, "--output", inputs=[("VIDEO", video), ("--weights", weights)])
    if not video.is_file():
        raise HieraVideoError(f"video '{video}' not found")
    net, prov = load_mae(model, weights, allow_random_weights)
    rec, protocol = reconstruct_video(net, prov, o)
    path = save_figure(rec, output, scale, frame_ms)
    summary = dict(output=str(path), **protocol, mask_ratio=rec.mask_ratio, kept_units=rec.info["kept_units"],
                   num_units=rec.info["num_units"], shown_frames=rec.frames, loss=rec.loss, masked_psnr_db=rec.masked_psnr, options=o.to_dict())
    if as_json:
        print(json_text(summary))
    else:
        console().print(f"{safe(path)}: {safe(prov.spec.name)}, mask ratio {rec.mask_ratio:.2f} ({rec.info['kept_units']}/"
                        f"{rec.info['num_units']} units visible), loss {rec.loss:.4f} (normalised pixels), masked-pixel PSNR "
                        f"{rec.masked_psnr:.1f} dB", highlight=False, soft_wrap=True)
    return 0
