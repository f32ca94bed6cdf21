"""What a training run shows and leaves behind: ``metrics.jsonl`` (+ TensorBoard), the
``curves.png`` plot, and the Rich progress line over optimizer steps."""

from __future__ import annotations

import json
from pathlib import Path

from hiera_video.errors import HieraVideoError
from hiera_video.report import atomic_path, json_text, progress_bar


class MetricsLog:
    """metrics.jsonl (one JSON object per line) and, optionally, TensorBoard."""

    def __init__(self, out: Path, tensorboard: bool, keep_until: int = 0):
        """``keep_until``: the step the run starts from (a resumed run's checkpoint); rows
        of later steps, logged by the interrupted run after its last checkpoint, are dropped
        (the resumed run logs those steps again)."""
        self.path = out / "metrics.jsonl"
        self.tb = None
        rows = read_rows(self.path)
        if any(r.get("step", 0) > keep_until for r in rows):
            with atomic_path(self.path) as tmp:
                Path(tmp).write_text("".join(json_text(r) + "\n" for r in rows if r.get("step", 0) <= keep_until))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise HieraVideoError("run.tensorboard needs the tensorboard package: pip install tensorboard") from None
            self.tb = SummaryWriter(str(out / "tensorboard"))

    def write(self, row: dict) -> None:
        try:
            with open(self.path, "a") as f:
                f.write(json_text(row) + "\n")  # strict JSON: a metric that does not exist is null
        except OSError as e:
            raise HieraVideoError(f"cannot write '{self.path}': {e.strerror or e}") from None
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{row['kind']}/{k}", v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_rows(jsonl: Path) -> list[dict]:
    if not jsonl.is_file():
        return []
    return [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]


def plot_curves(jsonl: Path, png: Path, val_key: str | None = None) -> None:
    """Training loss per step (and the epoch means) and lr per step; with ``val_key``, the
    validation metric per epoch as a third panel."""
    rows = read_rows(jsonl)
    train = [r for r in rows if r["kind"] == "train"]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    val = [r for r in rows if r["kind"] == "val" and r.get(val_key) is not None] if val_key else []
    if not train and not epochs:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if val_key else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.3 * panels, 3.5))
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], alpha=0.6, label="step")
    if epochs:
        axes[0].plot([r["step"] for r in epochs], [r["loss"] for r in epochs], marker="o", label="epoch mean")
    axes[0].set_title("training loss")
    axes[0].legend()
    axes[1].plot([r["step"] for r in train], [r["lr"] for r in train])
    axes[1].set_title("learning rate")
    for ax in axes[:2]:
        ax.set_xlabel("step")
    if val_key:
        axes[2].plot([r["epoch"] for r in val], [r[val_key] for r in val], marker="o")
        axes[2].set_title(f"validation {val_key}")
        axes[2].set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


class Progress:
    """Rich progress over optimizer steps: loss, lr, clips/s, ETA."""

    def __init__(self, console, total: int, done: int):
        self.p = progress_bar("[bold]epoch {task.fields[epoch]}", "loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[rate]} clips/s",
                              console=console, transient=False)
        self.p.start()
        self.task = self.p.add_task("train", total=total, completed=done, epoch=0, loss="-", lr="-", rate="-")

    def update(self, state, loss: float, lr: float, rate: float) -> None:
        # epochs are shown counted from 1, like the validation notes ("epoch 4: ..." after the 4th)
        self.p.update(self.task, completed=state.step, epoch=state.epoch + 1, loss=f"{loss:.4f}", lr=f"{lr:.2e}", rate=f"{rate:.1f}")

    def note(self, text: str) -> None:
        self.p.console.print(text, highlight=False)

    def close(self) -> None:
        self.p.stop()
