"""`hiera-video pretrain` and `reconstruct`: sparse MAE training, exact resume, label-free data,
reconstructions (de-normalisation), and pretrain -> finetune weight loading.

(Loss parity with the official MAE for a fixed mask is in test_models.py.)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import random
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

import hiera_video
from hiera_video.cli.pretrain import pretrain as pretrain_command
from hiera_video.cli.reconstruct import reconstruct as reconstruct_command
from hiera_video.data.datasets import build_unlabeled
from hiera_video.data.datasets.lists import read_path_list
from hiera_video.jobs.pretrain import create_pretrain_model, default_drop_path, load_pretrain_config, pretrain
from hiera_video.jobs.reconstruct import (
    denormalize_patches,
    normalize_patches,
    patches_to_pixels,
    reconstruct_clip,
)
from hiera_video.errors import HieraVideoError

from helpers import assert_same_weights


pytestmark = pytest.mark.usefixtures("one_thread")


def write_clip(path: Path, rng: np.random.Generator, frames: int = 20, size: int = 64) -> None:
    """A vertical colour gradient (random colours, darker at the top) with a bright disk
    drifting across it, H.264. Most patches are predictable ramps: an MAE learns them in a
    few steps, so a short run shows the loss falling."""
    import av

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    top, bottom = rng.uniform(0, 80, 3), rng.uniform(140, 230, 3)
    bg = top + (yy / (size - 1))[..., None] * (bottom - top)
    cx, cy, vx, vy = *rng.uniform(10, size - 10, 2), *rng.uniform(-1.5, 1.5, 2)
    radius, colour = rng.uniform(5, 10), rng.uniform(200, 255, 3)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30, options={"crf": "10", "preset": "ultrafast"})
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        for t in range(frames):
            disk = ((xx - cx - vx * t) ** 2 + (yy - cy - vy * t) ** 2 < radius**2)[..., None]
            img = np.where(disk, colour, bg).clip(0, 255).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """12 small videos in nested folders, a label-free list of them plus a corrupt file."""
    root = tmp_path_factory.mktemp("pre")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(12):
        rel = Path("clips") / f"group{i % 3}" / ("deeper" if i % 2 else "") / f"v{i}.mp4"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_clip(root / rel, rng)
        paths.append(rel.as_posix())
    (root / "broken.mp4").write_bytes(random.Random(3000).randbytes(3000))
    (root / "paths.txt").write_text("# paths only, no labels\n" + "\n".join(paths + ["broken.mp4"]) + "\n")
    (root / "train.txt").write_text("".join(f"{p} {i % 3}\n" for i, p in enumerate(paths)))  # "path label" lines
    return root


def tiny(root: Path, out: Path, *sets: str):
    base = [
        f"data.root={root}", "data.dataset=list", "data.annotations=paths.txt", "data.workers=0", "data.stride=2",
        "model.name=mae_hiera_nano_8x64", "model.mask_ratio=0.75", "optim.lr=1.5e-3", "optim.base_batch=8",
        "optim.min_lr=1e-5", "optim.epochs=2", "optim.warmup_epochs=0.5", "run.batch_size=8", "run.global_batch=null",
        "run.precision=fp32", "run.log_every=1", "run.ckpt_every_steps=0", f"run.output={out}",
    ]
    return load_pretrain_config("pretrain_video", base + list(sets))


@pytest.fixture(scope="module")
def run_dir(videos, tmp_path_factory) -> Path:
    """A finished tiny pretraining run: 4 epochs of 6 steps (13 videos, 2 per step, 4 clips each)."""
    out = tmp_path_factory.mktemp("run") / "mae"
    pretrain(tiny(videos, out, "optim.epochs=4", "optim.warmup_epochs=1", "data.workers=1"))
    return out


def test_video_recipe_preset():
    cfg = load_pretrain_config("pretrain_video")
    assert cfg.model.name == "mae_hiera_base_16x224" and cfg.model.mask_ratio == 0.9
    assert cfg.optim.betas == [0.9, 0.95] and cfg.optim.weight_decay == 0.05
    assert cfg.optim.lr == 8e-4 and cfg.optim.base_batch == 512 and cfg.optim.layer_decay is None
    assert cfg.data.repeated_aug == 4 and cfg.augment.scale == [0.5, 1.0] and cfg.augment.flip == "random"
    # Effective epochs = epochs x repeated sampling: 800 effective, warmup 120.
    assert cfg.optim.epochs * cfg.data.repeated_aug == 800 and cfg.optim.warmup_epochs * cfg.data.repeated_aug == 120
    assert cfg.model.drop_path is None
    assert [default_drop_path(f"mae_hiera_{s}_16x224") for s in ("base", "base_plus", "large", "huge")] == [0.1, 0.2, 0.2, 0.3]
    with pytest.raises(HieraVideoError, match="valid keys in 'augment'"):
        load_pretrain_config("pretrain_video", ["augment.mixup=0.8"])
    with pytest.raises(HieraVideoError, match="mask_ratio"):
        load_pretrain_config(None, ["model.mask_ratio=1.0"])
    demo = load_pretrain_config("pretrain_demo")
    assert demo.model.name == "mae_hiera_nano_8x64" and demo.optim.betas == [0.9, 0.95]


def test_label_free_datasets(videos, tmp_path):
    # Folder: any layout, recursive, loose files included.
    ds = build_unlabeled("folder", videos)
    assert len(ds) == 13 and all(it.label == -1 for it in ds.items)  # 12 + broken.mp4
    # List: paths only, paths with labels, a comma list, and a missing entry.
    (tmp_path / "mixed.txt").write_text(
        "path,label\nclips/group0/v0.mp4,0\n"
        f"{videos}/clips/group1/deeper/v1.mp4\nnot_there.mp4\n"
    )
    assert [v for _, v in read_path_list(tmp_path / "mixed.txt")][1] == f"{videos}/clips/group1/deeper/v1.mp4"
    ds = build_unlabeled("list", videos, tmp_path / "mixed.txt")
    assert len(ds) == 2 and len(ds.missing) == 1
    ds = build_unlabeled("list", videos, videos / "train.txt")  # "path label" lines: labels ignored
    assert len(ds) == 12 and {it.label for it in ds.items} == {-1}
    with pytest.raises(HieraVideoError, match="no videos"):
        build_unlabeled("folder", tmp_path)


def test_encoder_is_sparse_in_training(videos, tmp_path):
    """The configured model runs only the kept units' tokens through the first block."""
    model = create_pretrain_model(tiny(videos, tmp_path, "model.mask_ratio=0.75")).train()
    seen = []
    model.blocks[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    x = torch.randn(2, 3, *model.input_size)
    loss = model(x)[0]  # default mask ratio = the config's
    loss.backward()
    units = math.prod(model.mask_grid(x))
    kept = int(units * (1 - 0.75))
    assert seen == [kept * math.prod(model.mask_unit_size)] and kept < units


@pytest.mark.parametrize("name,shape", [("mae_hiera_nano_8x64", (2, 3, 8, 64, 64)), ("mae_hiera_tiny_224", (1, 3, 224, 224))])
def test_denormalize_round_trip(name, shape):
    model = hiera_video.create_model(name)
    x = torch.randn(shape)
    raw = model.pixel_targets(x, norm=False)
    normed = model.pixel_targets(x)
    torch.testing.assert_close(normalize_patches(raw), normed)
    torch.testing.assert_close(denormalize_patches(normed, raw), raw, atol=1e-5, rtol=1e-5)
    pixels = patches_to_pixels(model, raw, x.shape[2:])
    expected = x[:, :, :: model.patch_stride[0]] if x.dim() == 5 else x  # video targets are time-strided
    assert torch.equal(pixels, expected)


def test_reconstruction_frames_and_pasting():
    torch.manual_seed(0)
    model = hiera_video.create_model("mae_hiera_nano_8x64")
    clip = torch.rand(3, 8, 64, 64) * 2 - 1
    rec = reconstruct_clip(model, clip, mask_ratio=0.75, seed=3)
    assert rec.frames == [0, 2, 4, 6]
    for a in (rec.original, rec.masked, rec.reconstruction):
        assert a.shape == (4, 64, 64, 3) and a.dtype == torch.uint8
    assert int(rec.mask.sum()) == 4 and rec.mask.shape == (16,)
    again = reconstruct_clip(model, clip, mask_ratio=0.75, seed=3)
    assert torch.equal(again.reconstruction, rec.reconstruction)  # the seed fixes the mask
    # Visible units are pasted back from the original; masked ones are grey in the input.
    keep = rec.mask.view(4, 2, 2).repeat_interleave(32, 1).repeat_interleave(32, 2)  # [T', H, W]
    assert torch.equal(rec.reconstruction[keep], rec.original[keep])
    assert (rec.masked[~keep] == 128).all() and torch.equal(rec.masked[keep], rec.original[keep])
    assert not torch.equal(rec.reconstruction[~keep], rec.original[~keep])
    full = reconstruct_clip(model, clip, mask_ratio=0.75, seed=3, all_frames=True)
    assert full.frames == list(range(8)) and full.reconstruction.shape == (8, 64, 64, 3)
    assert torch.equal(full.reconstruction[::2], rec.reconstruction)
    assert math.isfinite(rec.loss) and rec.loss > 0


def test_pretrain_run_learns_and_records(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["kind"] == "train"]
    assert len(steps) == 24 and {"loss", "lr", "clips_per_s"} <= set(steps[0])
    # Per-epoch means (every video once per epoch: the content noise of single steps averages out).
    epochs = [r["loss"] for r in rows if r["kind"] == "epoch"]
    assert len(epochs) == 4 and epochs[0] == pytest.approx(sum(r["loss"] for r in steps[:6]) / 6)
    assert epochs[-1] < 0.85 * epochs[0], epochs
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["steps"] == 24 and m["effective_epochs"] == 16 and m["final_loss"] == epochs[-1] and m["mask_ratio"] == 0.75 and m["bad_training_videos"] >= 1
    bad = (run_dir / "bad_videos.csv").read_text().splitlines()[1:]
    assert len(bad) == 1 and "broken.mp4" in bad[0]
    for f in ("curves.png", "reconstruction.png"):
        assert (run_dir / f).read_bytes()[:4] == b"\x89PNG"
    page = (run_dir / "report.html").read_text()  # the run's page with the reconstruction inline
    assert 'alt="MAE reconstruction"' in page and "training loss" in page and "broken.mp4" in page
    assert (run_dir / "config.yaml").is_file() and json.loads((run_dir / "config.json").read_text())["model"]["mask_ratio"] == 0.75
    ckpt = torch.load(run_dir / "last.pt", weights_only=True)
    assert ckpt["meta"]["model"] == "mae_hiera_nano_8x64" and ckpt["meta"]["preprocessing"]["stride"] == 2


def test_exact_resume(videos, tmp_path):
    """Halting after 2 steps and resuming gives bit-identical weights to an uninterrupted run."""
    sets = ("run.preview=false", "model.drop_path=0.1", "data.limit_train=6")  # 3 steps per epoch
    pretrain(tiny(videos, tmp_path / "a", *sets))
    # Halted inside the first epoch; the resumed run crosses the epoch boundary.
    assert pretrain(tiny(videos, tmp_path / "b", *sets, "run.halt_after_steps=2")) == {"halted_at_step": 2}
    pretrain(tiny(videos, tmp_path / "b", *sets), resume="auto")
    assert_same_weights(tmp_path / "a", tmp_path / "b", steps=6)
    # The logs agree too: every step's loss, and the epoch means across the interruption.
    rows_a = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    for kind in ("train", "epoch"):
        assert [r["loss"] for r in rows_a if r["kind"] == kind] == [r["loss"] for r in rows_b if r["kind"] == kind]


def test_pretrained_weights_initialise_the_classifier(run_dir):
    last = str(run_dir / "last.pt")
    model, report = hiera_video.models.create_model_and_report("hiera_nano_8x64", weights=last, num_classes=6)
    assert any(k.startswith("decoder_blocks.") for k in report.dropped)
    assert {"mask_token", "decoder_pos_embed", "encoder_norm.weight"} <= set(report.dropped)
    assert any("MAE checkpoint" in line and "dropped" in line for line in report.messages())
    saved = torch.load(run_dir / "last.pt", weights_only=True)["model"]
    sd = model.state_dict()
    enc = [k for k in sd if not k.startswith(("norm.", "head."))]
    assert enc and all(torch.equal(sd[k], saved[k]) for k in enc)


def app() -> typer.Typer:
    a = typer.Typer()
    a.command("pretrain")(pretrain_command)
    a.command("reconstruct")(reconstruct_command)
    return a


def test_reconstruct_command_png_and_gif(run_dir, videos, tmp_path):
    video = videos / "clips" / "group0" / "v0.mp4"
    runner = CliRunner()
    png, gif = tmp_path / "r.png", tmp_path / "r.gif"
    res = runner.invoke(app(), ["reconstruct", str(video), "--weights", str(run_dir / "last.pt"), "-o", str(png), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["model"] == "mae_hiera_nano_8x64" and summary["mask_ratio"] == 0.75 and summary["shown_frames"] == [0, 2, 4, 6]
    img = Image.open(png)
    assert img.format == "PNG" and img.height > 4 * 64  # one row per predicted frame
    res = runner.invoke(app(), ["reconstruct", str(video), "--weights", str(run_dir / "last.pt"), "-o", str(gif),
                                "--all-frames", "--mask-ratio", "0.5", "--seed", "1"])
    assert res.exit_code == 0, res.output
    anim = Image.open(gif)
    assert anim.format == "GIF" and anim.n_frames == 8
    res = runner.invoke(app(), ["reconstruct", str(video), "--model", "mae_hiera_nano_8x64", "-o", str(tmp_path / "x.jpg")])
    assert res.exit_code != 0
    # A classifier checkpoint cannot reconstruct.
    with pytest.raises(HieraVideoError, match="MAE"):
        from hiera_video.jobs.reconstruct import load_mae

        load_mae("hiera_nano_8x64", "none", allow_random_weights=True)


def test_pretrain_command_show_config(tmp_path):
    res = CliRunner().invoke(app(), ["pretrain", "--show-config", "--model", "mae_hiera_large_16x224", "--mask-ratio", "0.8"])
    assert res.exit_code == 0, res.output
    assert "model.mask_ratio" in res.output and "0.8" in res.output and "mae_hiera_large_16x224" in res.output


def test_sigterm_saves_checkpoint(videos, tmp_path):
    """SIGTERM mid-run: last.pt is written and the run raises Interrupted (exit code 130)."""
    import signal
    import threading
    import time

    from hiera_video import errors

    out = tmp_path / "sig"

    def kill_when_training():
        deadline = time.time() + 120
        while not (out / "metrics.jsonl").exists() and time.time() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=kill_when_training, daemon=True).start()
    with pytest.raises(errors.Interrupted, match="resume auto") as e:
        pretrain(tiny(videos, out, "optim.epochs=50", "run.preview=false"))
    assert e.value.exit_code == 130
    state = torch.load(out / "last.pt", weights_only=True)
    assert 1 <= state["run_state"]["step"] < 50 * 6
    assert signal.getsignal(signal.SIGTERM) == before  # the run's handler is removed again


def test_ddp_two_cpu_processes(videos, tmp_path):
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    if not Path(torchrun).exists():
        pytest.skip("needs torchrun")
    out = tmp_path / "ddp"
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\nfrom hiera_video.jobs.pretrain import load_pretrain_config, pretrain\n"
        "pretrain(load_pretrain_config('pretrain_video', sys.argv[1:]))\n"
    )
    sets = [f"data.root={videos}", "data.dataset=list", "data.annotations=paths.txt", "data.workers=0", "data.stride=2",
            "data.limit_train=8", "model.name=mae_hiera_nano_8x64", "model.mask_ratio=0.75", "optim.base_batch=16",
            "optim.epochs=1", "optim.warmup_epochs=0", "run.batch_size=4", "run.global_batch=16", "run.precision=fp32",
            "run.log_every=1", "run.preview=false", f"run.output={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", str(script), *sets],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["processes"] == 2 and m["accum_steps"] == 2 and m["global_batch"] == 16 and m["steps"] == 2
    state = torch.load(out / "last.pt", weights_only=True)
    assert len(state["rng"]) == 2 and state["world_size"] == 2


def test_bf16_autocast(videos, tmp_path):
    out = tmp_path / "bf16"
    summary = pretrain(tiny(videos, out, "run.precision=bf16", "optim.epochs=1", "data.limit_train=4", "run.preview=false"))
    assert summary["steps"] == 2 and math.isfinite(summary["final_loss"])
    with pytest.raises(HieraVideoError, match="fp16"):
        pretrain(tiny(videos, tmp_path / "fp16", "run.precision=fp16", "run.device=cpu"))
