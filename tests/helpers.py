"""Helpers shared by the tests: the CLI run in-process, the exact-resume comparison, a tiny
saved classifier, official-format weight files and generated media."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hiera_video.cli.app import main

NANO = "hiera_nano_8x64"
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220)}


def run_cli(argv: list[str], capsys=None) -> tuple[int, str, str]:
    """``hiera-video ARGV`` in this process, as the installed entry point runs it: the exit
    code, and (with ``capsys``) what it printed to stdout and stderr."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return e.value.code, out, err


def assert_same_weights(run_a: Path, run_b: Path, steps: int) -> tuple[dict, dict]:
    """Both runs' ``last.pt`` are at ``steps`` optimizer steps with bit-identical weights;
    returns the two checkpoints for further checks."""
    a = torch.load(Path(run_a) / "last.pt", weights_only=True)
    b = torch.load(Path(run_b) / "last.pt", weights_only=True)
    assert a["run_state"]["step"] == b["run_state"]["step"] == steps
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    return a, b


def damaged_video(path: Path, pick) -> tuple[str, int, int]:
    """A stamped 48-frame 30 fps video in which the frames ``pick(sampled)`` of those that the
    centre clip of hiera_nano_8x64 samples (8 frames, stride 4; worked out here with the
    sampler, not by the code under test) cannot be decoded. Returns the path, the number of
    damaged sampled frames and the number of sampled frames."""
    from hiera_video.data.transforms import temporal_view_indices
    from videogen import write_damaged_video

    sampled = sorted(set(temporal_view_indices(48, 30.0, 1, "dense", 8, 4, 30.0)[0].tolist()))
    damaged = set(pick(sampled))
    return str(write_damaged_video(path, 48, damaged)), len(damaged), len(sampled)


def nano_classifier(path: Path, labels: list[str], head_std: float | None = None, **meta) -> tuple[torch.nn.Module, str]:
    """A hiera_nano_8x64 (after ``torch.manual_seed(0)``) with a class per label, saved at ``path``
    with its labels and ``meta``; ``head_std`` redraws the head's weights from N(0, head_std) so
    the scores are far from uniform. Returns the model (in eval mode) and the checkpoint path."""
    import hiera_video
    from hiera_video.models.checkpoints import save_checkpoint

    torch.manual_seed(0)
    model = hiera_video.create_model(NANO, num_classes=len(labels)).eval()
    if head_std is not None:
        with torch.no_grad():
            model.head.projection.weight.normal_(0, head_std)
    return model, save_checkpoint(path, model, meta=dict(labels=list(labels), **meta))


def save_official(path: Path, weights) -> str:
    """``weights`` (a module or a state dict) written as the official Hiera repository stores
    them: ``{"model_state": state_dict}``. Returns the path."""
    torch.save({"model_state": weights.state_dict() if isinstance(weights, torch.nn.Module) else weights}, path)
    return str(path)


def colour_videos(root: Path, per_class: int, num_train: int, num_frames: int, jitter=False, folders=False) -> list[str]:
    """A list dataset of 64x64 videos told apart by colour, a class per COLOURS entry: ``per_class``
    videos each (``red/3.mp4`` with ``folders``, else ``red3.mp4``; ``jitter`` varies the shade),
    the first ``num_train`` for training, the rest in val.txt, and labels.txt. Returns the
    training 'path label' lines, for the caller to write into train.txt with its broken files."""
    from videogen import write_video

    train, val = [], []
    for c, (name, rgb) in enumerate(COLOURS.items()):
        for k in range(per_class):
            rel = f"{name}/{k}.mp4" if folders else f"{name}{k}.mp4"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            colour = tuple(max(0, min(255, v + 9 * (k % 4) - 12)) for v in rgb) if jitter else rgb
            write_video(root / rel, num_frames=num_frames, height=64, width=64, color=colour)
            (train if k < num_train else val).append(f"{rel} {c}")
    (root / "val.txt").write_text("\n".join(val) + "\n")
    (root / "labels.txt").write_text("\n".join(COLOURS) + "\n")
    return train


def patch_everywhere(monkeypatch, name: str, replacement) -> None:
    """Replace ``hiera_video.data.transforms.<name>`` and every loaded hiera_video module's
    import of it (``from ... import name`` binds the function in the importing module)."""
    import sys

    from hiera_video.data import transforms

    real = getattr(transforms, name)
    for module in [m for k, m in sys.modules.items() if k.startswith("hiera_video") and m is not None]:
        if getattr(module, name, None) is real:
            monkeypatch.setattr(module, name, replacement)
