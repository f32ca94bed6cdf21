"""A training run's ``metrics.jsonl`` (+ TensorBoard), ``curves.png`` plot and Rich progress line."""

import json
from pathlib import Path

from hiera_video.errors import HieraVideoError
from hiera_video.report import atomic_path, json_text, progress_bar


class MetricsLog:
    """metrics.jsonl (+ TensorBoard); rows after ``keep_until`` (a resumed run's start step) are dropped."""

    def __init__(self, out: Path, tensorboard: bool, keep_until: int = 0):
        self.path, self.tb = out / "metrics.jsonl", None
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
                f.write(json_text(row) + "\n")  # strict JSON: a missing metric is null
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
    return [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()] if jsonl.is_file() else []


def plot_curves(jsonl: Path, png: Path, val_key: str | None = None) -> None:
    """Loss (per step and epoch mean) and lr per step; with ``val_key``, that metric per epoch."""
    rows = read_rows(jsonl)
    train, epochs = ([r for r in rows if r["kind"] == kind] for kind in ("train", "epoch"))
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
    axes[0].legend()
    axes[1].plot([r["step"] for r in train], [r["lr"] for r in train])
    if val_key:
        axes[2].plot([r["epoch"] for r in val], [r[val_key] for r in val], marker="o")
    for ax, title, x in zip(axes, ("training loss", "learning rate", f"validation {val_key}"), ("step", "step", "epoch")):
        ax.set(title=title, xlabel=x)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


class Progress:
    """Rich progress over optimizer steps: loss, lr, clips/s, ETA."""

    def __init__(self, console, total: int, done: int):
        self.p = progress_bar("[bold]epoch {task.fields[epoch]}", "loss {task.fields[loss]}  lr {task.fields[lr]}  "
                              "{task.fields[rate]} clips/s", console=console, transient=False)
        self.p.start()
        self.task = self.p.add_task("train", total=total, completed=done, epoch=0, loss="-", lr="-", rate="-")

    def update(self, state, loss: float, lr: float, rate: float) -> None:
        self.p.update(self.task, completed=state.step, epoch=state.epoch + 1,  # from 1, like "epoch 4: ..." notes
                      loss=f"{loss:.4f}", lr=f"{lr:.2e}", rate=f"{rate:.1f}")

    def note(self, text: str) -> None:
        self.p.console.print(text, highlight=False)

    def close(self) -> None:
        self.p.stop()
