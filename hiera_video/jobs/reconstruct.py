"""MAE figures: original | masked input | reconstruction. Predictions are per-patch normalised pixels, de-normalised
with each ground-truth patch's mean/var; visible patches come from the original, as in the papers. A video token covers
2 frames but only its first is predicted: frames 0, 2, 4, ... are shown (``all_frames``: every frame, repeated)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from hiera_video import limits
from hiera_video.data.transforms import make_views
from hiera_video.errors import HieraVideoError
from hiera_video.options import Options

PATCH_EPS = 1.0e-6  # the epsilon of the target normalisation (pixel_targets)
GREY = 0.5
GIF_MAX_SIDE = 65535  # a GIF header stores 16-bit sizes


def normalize_patches(patches: torch.Tensor) -> torch.Tensor:
    """``(p - mean) / sqrt(var + 1e-6)`` per patch (unbiased var over the last axis): the MAE training target."""
    return (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + PATCH_EPS) ** 0.5


def denormalize_patches(pred: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize_patches` with the ground-truth ``patches``' statistics (``[..., N, P]``)."""
    return pred * (patches.var(-1, keepdim=True) + PATCH_EPS) ** 0.5 + patches.mean(-1, keepdim=True)


def patches_to_pixels(model, patches: torch.Tensor, size) -> torch.Tensor:
    """Inverse of ``model.pixel_targets(x, norm=False)``: ``[B, N, P]`` (spatial token order) -> ``[B, C, T', H, W]``
    (``T' = T / patch_stride[0]``, each token's first frame) for ``size = (T, H, W)``, or ``[B, C, H, W]``."""
    p, B, C, (H, W) = model.pred_stride, patches.shape[0], model.in_chans, size[-2:]
    if len(size) == 2:
        t = patches.reshape(B, H // p, W // p, C, p, p)  # (channel, y, x) per patch
        return t.permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)
    Tp = size[0] // model.patch_stride[0]
    t = patches.reshape(B, Tp, H // p, W // p, p, p, C)  # (y, x, channel) per patch: official video order
    return t.permute(0, 6, 1, 2, 4, 3, 5).reshape(B, C, Tp, H, W)


@dataclass
class Reconstruction:
    """Frames to show, each ``uint8 [F, H, W, 3]``, and what they came from."""
    original: torch.Tensor
    masked: torch.Tensor
    reconstruction: torch.Tensor
    mask: torch.Tensor  # bool [num_mask_units], True = kept (visible to the encoder)
    frames: list[int]  # clip frame index of every shown frame
    mask_ratio: float
    loss: float  # the training loss: MSE of normalised pixels over masked patches
    masked_psnr: float  # PSNR (dB) of the reconstruction over masked pixels of the predicted frames
    info: dict = field(default_factory=dict)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:  # [C, F, H, W] in [0, 1] -> [F, H, W, C]
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 3, 0).cpu()


@torch.no_grad()
def reconstruct_clip(model, clip: torch.Tensor, mask_ratio: float | None = None, seed: int = 0, mean=(0.45, 0.45, 0.45),
                     std=(0.225, 0.225, 0.225), all_frames: bool = False, mask: torch.Tensor | None = None) -> Reconstruction:
    """The MAE on one normalised clip ``[(1,) 3, T, H, W]``, seeded mask or ``mask`` ``[1, units]`` (True = keep)."""
    clip = clip[None] if clip.dim() == 4 else clip
    if clip.dim() != 5 or clip.shape[0] != 1:
        raise HieraVideoError(f"reconstruct takes one video clip [3, T, H, W], got {tuple(clip.shape)}")
    was_training = model.training
    model.eval()
    try:
        dev = next(model.parameters()).device
        x = clip.to(dev, torch.float32)
        ratio = model.default_mask_ratio if mask_ratio is None else float(mask_ratio)
        if not 0.0 <= ratio < 1.0:
            raise HieraVideoError(f"mask ratio must be in [0, 1), got {ratio}")
        if mask is None:  # drawn from seed; the global RNG is left untouched
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                mask = model.get_random_mask(x.new_empty(x.shape, device="cpu"), ratio)
        mask = mask.to(dev).bool()
        if int(mask.sum()) == 0:
            raise HieraVideoError(f"mask ratio {ratio} keeps no mask unit of this clip; lower --mask-ratio")
        grid = model.mask_grid(x)
        latent, mask = model.forward_encoder(x, ratio, mask)
        pred, token_keep = model.forward_decoder(latent, mask, grid)  # [1, N, P], [1, N]
        raw = model.pixel_targets(x, norm=False)  # ground-truth patches, normalised-input space
        target, masked_tok = normalize_patches(raw), ~token_keep
        loss = float(((pred[masked_tok].float() - target[masked_tok]) ** 2).mean()) if masked_tok.any() else 0.0
        pixels = torch.where(token_keep[..., None], raw, denormalize_patches(pred.float(), raw))  # visible: original
        m, s = (torch.as_tensor(v, dtype=torch.float32, device=dev).view(3, 1, 1, 1) for v in (mean, std))
        recon = patches_to_pixels(model, pixels, x.shape[2:])[0] * s + m  # [3, T', H, W]
        original = x[0] * s + m  # [3, T, H, W]
        keep_px = F.interpolate(mask.view(1, 1, *grid).float(), size=x.shape[2:])[0]  # [1, T, H, W]
        ts, T = model.patch_stride[0], x.shape[2]
        if all_frames:
            frames = list(range(T))
            recon = torch.where(keep_px > 0, original, recon.repeat_interleave(ts, dim=1)[:, :T])
        else:
            frames = list(range(0, T, ts))
            original, keep_px = original[:, ::ts], keep_px[:, ::ts]
        masked_in = original * keep_px + GREY * (1 - keep_px)
        step = ts if all_frames else 1  # PSNR over masked pixels of the predicted frames, in [0, 1] RGB
        pred_frames, orig_frames = recon[:, ::step].clamp(0, 1), original[:, ::step].clamp(0, 1)
        hole = (keep_px[:, ::step] == 0).expand_as(pred_frames)
        mse = float(((pred_frames - orig_frames)[hole] ** 2).mean()) if hole.any() else 0.0
        psnr = float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)
        return Reconstruction(_to_uint8(original), _to_uint8(masked_in), _to_uint8(recon), mask[0].cpu(), frames, ratio, loss, psnr,
                              dict(kept_units=int(mask.sum()), num_units=int(mask.shape[1]), mask_grid=list(grid)))
    finally:
        model.train(was_training)


def _panel_rows(rec: Reconstruction, scale: int | None, gap: int, head_h: int = 18) -> tuple[list, object]:
    """One PIL image per shown frame (original | masked | reconstruction), and the header above them."""
    from PIL import Image, ImageDraw
    scale, rows = scale or auto_scale(rec.original.shape[2]), []
    for i in range(len(rec.frames)):
        panels = [rec.original[i], rec.masked[i], rec.reconstruction[i]]
        h, w = panels[0].shape[:2]
        row = Image.new("RGB", (3 * w * scale + 2 * gap, h * scale), (255, 255, 255))
        for k, p in enumerate(panels):
            img = Image.fromarray(p.numpy(), "RGB")
            row.paste(img.resize((w * scale, h * scale), Image.NEAREST) if scale != 1 else img, (k * (w * scale + gap), 0))
        rows.append(row)
    d = ImageDraw.Draw(head := Image.new("RGB", (rows[0].width, head_h), (255, 255, 255)))
    for k, t in enumerate(["original", f"masked {rec.mask_ratio:.0%}", "reconstruction"]):
        d.text((k * (rec.original.shape[2] * scale + gap) + 2, 3), t, fill=(0, 0, 0))
    return rows, head


def auto_scale(width: int, target: int = 160) -> int:
    """Nearest-neighbour upscale so that small models' frames are big enough to see."""
    return max(1, math.ceil(target / max(width, 1)))


def save_png(rec: Reconstruction, path, scale: int | None = None, gap: int = 4) -> Path:
    """One row per shown frame (time goes down), three panels per row, with a header."""
    from PIL import Image, ImageDraw
    (rows, head), label_w = _panel_rows(rec, scale, gap), 34
    total_h = head.height + sum(r.height for r in rows) + gap * (len(rows) - 1)
    canvas = Image.new("RGB", (label_w + rows[0].width, total_h), (255, 255, 255))
    canvas.paste(head, (label_w, 0))
    d, y = ImageDraw.Draw(canvas), head.height
    for f, r in zip(rec.frames, rows):
        canvas.paste(r, (label_w, y))
        d.text((2, y + r.height // 2 - 5), f"t={f}", fill=(0, 0, 0))
        y += r.height + gap
    (path := Path(path)).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return path


def save_gif(rec: Reconstruction, path, scale: int | None = None, frame_ms: int = 250, gap: int = 4) -> Path:
    """An animated GIF: the three panels side by side, one GIF frame per shown clip frame."""
    from PIL import Image
    rows, head = _panel_rows(rec, scale, gap)
    frames = [Image.new("RGB", (r.width, head.height + r.height), (255, 255, 255)) for r in rows]
    for img, r in zip(frames, rows):
        img.paste(head, (0, 0))
        img.paste(r, (0, head.height))
    (path := Path(path)).parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=max(20, int(frame_ms)), loop=0)
    return path


def check_figure(rec: Reconstruction, suffix: str, scale: int | None, gap: int = 4) -> None:
    """Refuse a ``--scale`` whose figure exceeds a GIF side or the memory limit (3 copies of w x h x 3 B)."""
    h, w = rec.original.shape[1], rec.original.shape[2]
    scale = scale or auto_scale(w)
    width, row_h = 34 + 3 * w * scale + 2 * gap, h * scale
    height = 18 + (row_h if suffix == ".gif" else len(rec.frames) * (row_h + gap))
    if suffix == ".gif" and max(width, height) > GIF_MAX_SIDE:
        raise HieraVideoError(f"--scale {scale}: the GIF would be {width}x{height} pixels; a GIF side is at most "
                              f"{GIF_MAX_SIDE} px (use a smaller --scale, or .png)")
    frames = len(rec.frames) if suffix == ".gif" else 1
    limits.check_memory(f"--scale {scale}", 3.0 * 3 * width * height * frames, f"{frames} figure(s) of {width}x{height} pixels")


def save_figure(rec: Reconstruction, path, scale: int | None = None, frame_ms: int = 250) -> Path:
    suffix = Path(path).suffix.lower()
    check_figure(rec, suffix, scale)
    if suffix == ".png":
        return save_png(rec, path, scale)
    if suffix == ".gif":
        return save_gif(rec, path, scale, frame_ms)
    raise HieraVideoError(f"--output must end in .png or .gif, got '{path}'")


def load_mae(model: str | None = None, weights: str | None = None, allow_random_weights: bool = False):
    """``(model, Provenance)`` of an MAE model by the weights policy (None: official ``mae_k400``)."""
    from hiera_video.models.load import load
    return load("mae", model, weights, allow_random=allow_random_weights)


@dataclass
class ReconstructOptions(Options):
    """``hiera-video reconstruct``'s options, checked on construction; saved as ``"options"`` in its summary."""

    video: Path
    output: Path
    model: str | None = None
    weights: str | None = None
    mask_ratio: float | None = None  # None: the model's
    seed: int = 0
    all_frames: bool = False
    stride: int | None = None
    scale: int | None = None
    frame_ms: int = 250
    device: str = "auto"
    backend: str = "auto"
    allow_random_weights: bool = False
    as_json: bool = False  # display only

    def __post_init__(self):
        if self.output.suffix.lower() not in (".png", ".gif"):
            raise HieraVideoError(f"--output must end in .png or .gif, got '{self.output}'")


def reconstruct_video(net, prov, o: ReconstructOptions) -> tuple[Reconstruction, dict]:
    """Reconstruct the centre clip of ``o.video`` at the model's input size (sampling and normalisation: ``prov``'s)."""
    from hiera_video.runtime import pick_device
    T, S = net.input_size[0], net.input_size[-1]
    clip = prov.clip.with_(num_frames=T, crop_size=S, stride=o.stride, temporal_views=1, spatial_views=1, backend=o.backend)
    views, infos = make_views(str(o.video), clip)
    net = net.to(pick_device(o.device))
    rec = reconstruct_clip(net, views[0], o.mask_ratio, o.seed, clip.mean, clip.std, o.all_frames)
    return rec, dict(video=str(o.video), model=prov.spec.name, weights=prov.source, frames=T, size=S, sampling=clip.sampling,
                     stride=int(clip.stride), target_fps=float(clip.target_fps), seed=o.seed, clip_frames=infos[0].frame_indices)
