"""Options several commands share, used as parameter defaults (``device: str = options.device()``); imports no torch."""

import os

import typer

from hiera_video.data.kinds import ALL_KINDS, DATASET_KINDS  # noqa: F401 (cheap: no torch)
from hiera_video.limits import DEFAULT_DECODE_TIMEOUT, MAX_BATCH

#: The built-in label sets ``--labels`` takes by name (hiera_video/data/labels).
BUILTIN_LABELS = "kinetics400, kinetics600, kinetics700, ssv2 (174 classes), ava (AVA v2.2's 60), imagenet1k"


def model(default=None, help="Model name [default: hiera_base_16x224, or the one a checkpoint names]."):
    return typer.Option(default, "--model", "-m", help=help)


def weights(help="Zoo tag, URL, hf-hub:ORG/NAME[@REVISION] or checkpoint path [default: the model's official weights]."):
    return typer.Option(None, "--weights", "-w", help=help)


def labels_help(what: str) -> str:
    return f"{what} A .txt (one class per line, or 'id: name' lines) or .json file, or a built-in set: {BUILTIN_LABELS}."


def dataset(kinds=DATASET_KINDS, default=None, help=""):
    """``--dataset``: one of ``kinds`` (or an alias, hiera_video.data.datasets.KIND_ALIASES)."""
    return typer.Option(default, "--dataset", "-d", help=" | ".join(kinds) + help)


def device():
    return typer.Option("auto", help="auto | cpu | cuda | cuda:N")


def dtype():
    return typer.Option("auto", help="Compute precision: auto (bf16 where the hardware has it) | fp32 | bf16 | fp16.")


def backend():
    return typer.Option("auto", help="Video decoder: auto | decord | pyav | torchcodec (needs FFmpeg 4-8 shared libraries)")


def decode_device():
    return typer.Option("cpu", "--decode-device", help="cpu | cuda: decode on the GPU with NVDEC (needs --backend torchcodec or auto "
                        "with torchcodec installed; codecs NVDEC cannot decode fall back to the CPU per video). Unmeasured.")


def allow_random_weights():
    return typer.Option(False, help="Allow --weights none (random init; for testing pipelines).")


def batch_size(default=8):
    return typer.Option(default, "--batch-size", "-b", min=1, max=MAX_BATCH, help=f"Clips (views or windows) per forward pass (at most {MAX_BATCH}).")


def workers():
    return typer.Option(2, min=0, help="Worker processes decoding videos (0: decode in this process, without a time limit).")


def decode_timeout():
    return typer.Option(DEFAULT_DECODE_TIMEOUT, "--decode-timeout", min=0,
                        help="Seconds one video may take to decode (with --workers >= 1) before it is stopped and reported as failed; 0 = no limit.")


def as_json(help: str):
    return typer.Option(False, "--json", help=help)


def config_overrides(**sections: dict) -> dict:
    """``{section: {key: str(value)}}`` of the training options that were given (None: not given)."""
    given = {name: {k: str(v) for k, v in keys.items() if v is not None} for name, keys in sections.items()}
    return {name: keys for name, keys in given.items() if keys}


def print_config(cfg, title: str, show_config: bool, out) -> None:
    """Every config key with its value and meaning; under torchrun only rank 0 prints it (unless --show-config)."""
    from rich.table import Column, Table

    from hiera_video.config import describe
    from hiera_video.report import safe

    table = Table(Column("key", no_wrap=True), "value", Column("meaning", style="dim"), title=safe(title), show_lines=False)
    for key, value, meaning in describe(cfg):
        table.add_row(safe(key), safe(value), safe(meaning))
    if show_config or os.environ.get("RANK", "0") == "0":
        out.print(table)
