"""Checkpoints: where weights come from, what layout they are in, and how they fit a model.

Three steps, used by :func:`hiera_video.models.factory.create_model`:

1. :func:`resolve_source` turns ``weights`` (a zoo tag, a URL or a local path) into a local
   path. Zoo tags and URLs go through the torch hub cache
   (``$TORCH_HOME/hub/checkpoints/<basename>``, the place ``torch.hub`` uses), so a file
   fetched once, by us or by ``torch.hub``, is never fetched again.
2. :func:`read_checkpoint` reads a file or directory **without unpickling** (``torch.load``
   with ``weights_only=True``, or safetensors) and converts every supported layout to the
   official key names:

   ===================  =====================================================================
   layout               detected by
   ===================  =====================================================================
   ``official``         ``{"model_state": sd}`` (official ``.pth``) or a bare official sd
   ``official-hub``     a directory with ``config.json`` (official constructor kwargs) and
                        ``model.safetensors``; the config is cross-checked with the tensors
   ``timm``             ``head.fc.*`` / ``head.norm.*`` keys (timm's names for
                        ``head.projection.*`` / ``norm.*``)
   ``hf-transformers``  ``[hiera.]embeddings.patch_embeddings.*`` /
                        ``[hiera.]encoder.stages.S.layers.L.*`` keys (HF ``HieraModel``,
                        ``HieraForImageClassification``, ``HieraForPreTraining``); an HF
                        ``config.json`` (``"model_type": "hiera"``) is read too
   ``hiera-video``      this project's ``{"format": "hiera-video", "model": sd, "meta": ...}``
   ===================  =====================================================================

   A ``module.`` / ``model.`` / ``_orig_mod.`` prefix on every key (DDP, wrappers,
   ``torch.compile``) is removed first.
3. :func:`apply_checkpoint` loads the converted tensors into a model, handling the cases
   that are not errors: an MAE checkpoint into a classifier (decoder dropped, final norm and
   head stay initialised), a head of another size (re-initialised), position embeddings
   made for another input size (resampled). Everything else must match exactly, or it is a
   :class:`~hiera_video.errors.HieraVideoError` that lists what differs.

:func:`save_checkpoint` / :func:`load_training_state` write and read this project's own
checkpoints (atomically, plain tensors and Python values only).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import pickle
import re
import socket
import struct
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Iterable, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from hiera_video.errors import HieraVideoError
from hiera_video.models.posembed import resample_grid

FORMAT = "hiera-video"
FORMAT_VERSION = 1

#: Position embeddings that are resampled when the token grid differs.
POS_EMBED_KEYS = ("pos_embed", "pos_embed_spatial", "pos_embed_temporal", "decoder_pos_embed")
#: Key prefixes that exist only in MAE checkpoints (decoder, fusion heads, encoder norm).
MAE_ONLY_PREFIXES = ("decoder_", "mask_token", "multi_scale_fusion_heads.", "encoder_norm.")
#: Key prefixes that exist only in classifier checkpoints.
CLASSIFIER_ONLY_PREFIXES = ("norm.", "head.")
#: Prefixes removed when every key carries them (DDP, wrappers, torch.compile).
WRAPPER_PREFIXES = ("module.", "model.", "_orig_mod.")
#: Constructor arguments that change what the weights compute without changing their shapes.
SEMANTIC_KEYS = (
    "num_heads", "head_mul", "mask_unit_attn", "q_stride", "mask_unit_size", "patch_stride",
    "patch_padding", "patch_kernel", "dim_mul", "mlp_ratio", "in_chans", "sep_pos_embed",
)

DOWNLOAD_TIMEOUT_S = 30.0


# ====================================================================== small helpers
def _one_line(text: object, limit: int = 200) -> str:
    """First line of ``text``, ANSI codes removed, at most ``limit`` characters."""
    s = re.sub(r"\x1b\[[0-9;]*m", "", str(text)).strip()
    s = s.splitlines()[0] if s else ""
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _few(items: Sequence[object], n: int = 3) -> str:
    """``"a, b, c (+5 more)"``."""
    items = list(items)
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")


def _groups(keys: Iterable[str]) -> str:
    """Keys summarised by their top-level module: ``"decoder_blocks (24), encoder_norm (2)"``."""
    counts: dict[str, int] = {}
    for k in keys:
        top = k.split(".", 1)[0]
        counts[top] = counts.get(top, 0) + 1
    return ", ".join(f"{k} ({v})" for k, v in counts.items())


def _shape(t: torch.Tensor | torch.Size | Sequence[int]) -> str:
    dims = t.shape if isinstance(t, torch.Tensor) else t
    return "[" + ", ".join(str(int(d)) for d in dims) + "]"


def _hub_checkpoint_dir() -> str:
    """``<torch hub dir>/checkpoints``: honours ``TORCH_HOME`` and ``torch.hub.set_dir``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def _in_cache_hint(path: str) -> str:
    """Extra advice for a bad file that sits in the download cache."""
    try:
        cache = os.path.realpath(_hub_checkpoint_dir())
        if os.path.realpath(path).startswith(cache + os.sep):
            return " (it is in the download cache: delete it and it will be downloaded again)"
    except OSError:  # pragma: no cover - unreadable hub dir
        pass
    return ""


def _model_name(model: nn.Module) -> str:
    spec = getattr(model, "spec", None)
    return getattr(spec, "name", None) or type(model).__name__


# ====================================================================== 1. sources
def cache_path(url: str) -> str:
    """Where the download cache keeps ``url``: ``<torch hub dir>/checkpoints/<basename>``."""
    name = os.path.basename(urllib.parse.urlparse(url).path)
    if not name:
        raise HieraVideoError(f"cannot name a cache file for URL '{url}': it has no file name; pass a URL that ends in a file name")
    return os.path.join(_hub_checkpoint_dir(), name)


def download_cached(url: str, progress: bool = True, timeout: float = DOWNLOAD_TIMEOUT_S) -> str:
    """Return the cached copy of ``url``, downloading it first if it is not there.

    The download goes to a temporary file in the cache directory that is renamed into place
    only when complete, so an interrupted download never leaves a partial checkpoint behind.
    """
    dest = cache_path(url)
    if os.path.isfile(dest) and os.path.getsize(dest) > 0:
        return dest
    name = os.path.basename(dest)
    hint = f"if this machine is offline, get the file elsewhere and pass it with --weights /path/to/{name} (or put it at {dest})"
    tmp: Optional[str] = None
    try:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=os.path.dirname(dest))
        request = urllib.request.Request(url, headers={"User-Agent": "hiera-video"})
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(request, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            from tqdm.auto import tqdm

            got = 0
            with tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"downloading {name}",
                disable=None if progress else True, leave=False,
            ) as bar:
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    f.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            if total is not None and got != total:
                raise OSError(f"connection closed after {got} of {total} bytes")
            if got == 0:
                raise OSError("the server sent an empty file")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
        tmp = None
    except urllib.error.HTTPError as e:
        raise HieraVideoError(f"could not download {url} to {dest} (HTTP {e.code} {_one_line(e.reason)}); {hint}") from None
    except urllib.error.URLError as e:
        raise HieraVideoError(f"could not download {url} to {dest} ({_one_line(e.reason)}); {hint}") from None
    except (socket.timeout, TimeoutError):
        raise HieraVideoError(f"could not download {url} to {dest} (no answer within {timeout:g} s); {hint}") from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        reason = _one_line(e) or type(e).__name__
        raise HieraVideoError(f"could not download {url} to {dest} ({reason}); {hint}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    return dest


def resolve_source(spec, weights) -> str:
    """Local path of ``weights`` for zoo model ``spec``.

    ``weights``: a weights tag of ``spec`` (e.g. ``"mae_k400_ft_k400"``), an ``http(s)://``
    URL (both downloaded into the torch hub cache when missing), a ``file://`` URL or a local
    file or directory.
    """
    if weights is None or not str(os.fspath(weights)).strip():
        raise HieraVideoError("no weights given: pass a weights tag, a URL or a path")
    w = str(os.fspath(weights)).strip()
    tags = dict(getattr(spec, "weights", {}) or {})
    name = getattr(spec, "name", "this model")
    if w in tags:
        return download_cached(tags[w].url)
    parsed = urllib.parse.urlparse(w)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        return download_cached(w)
    if scheme == "file":
        path = urllib.request.url2pathname(parsed.path)
        if not os.path.exists(path):
            raise HieraVideoError(f"weights file not found: {path} (from {w})")
        return os.path.abspath(path)
    path = os.path.abspath(os.path.expanduser(w))
    if os.path.exists(path):
        return path
    available = ", ".join(tags) if tags else "none: this model has no official weights, pass a local checkpoint file"
    if not any(sep in w for sep in ("/", os.sep)) and not PurePath(w).suffix:
        raise HieraVideoError(
            f"unknown weights '{w}' for {name}: not a file, and not one of its weights tags (available: {available})"
        )
    raise HieraVideoError(f"weights file not found: {path} (weights tags of {name}: {available})")


# ====================================================================== 2. reading
@dataclass
class Checkpoint:
    """Tensors in the official key layout plus what is known about them."""

    state_dict: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)
    layout: str = "official"
    path: str = ""

    @property
    def num_classes(self) -> int | None:
        w = self.state_dict.get("head.projection.weight")
        return int(w.shape[0]) if w is not None else None

    @property
    def is_mae(self) -> bool:
        return any(k.startswith(MAE_ONLY_PREFIXES) for k in self.state_dict)

    @property
    def config(self) -> dict | None:
        """Official constructor kwargs the weights were made with, when known."""
        cfg = self.meta.get("config")
        return cfg if isinstance(cfg, Mapping) else None


def _official_defaults(mae: bool) -> dict:
    """Default constructor kwargs of the official classes (what a partial config.json omits)."""
    import inspect

    from hiera_video.models.hiera import Hiera
    from hiera_video.models.mae import MaskedAutoencoderHiera

    classes = (Hiera, MaskedAutoencoderHiera) if mae else (Hiera,)
    out: dict = {}
    for cls in classes:
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.default is not inspect.Parameter.empty:
                out[p.name] = list(p.default) if isinstance(p.default, tuple) else p.default
    if not mae:
        for k in ("decoder_embed_dim", "decoder_depth", "decoder_num_heads", "mask_ratio"):
            out.pop(k, None)
    return out


def _is_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 0 < n <= size - 8 and head[8:9] == b"{"


def _load_safetensors(path: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise HieraVideoError(
            f"{path} is not a readable safetensors file ({_one_line(e)}): it is corrupt or truncated; "
            f"download or copy it again{_in_cache_hint(path)}"
        ) from None


def _torch_load(path: str) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors for every way it can fail."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        m = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"([\w.]+) was not an allowed global", text)
        if m:
            raise HieraVideoError(
                f"{path} is not a plain-tensor checkpoint: it contains a pickled Python object ({m.group(1)}) and "
                "loading it would need full unpickling, which can run arbitrary code and is refused; re-save just the "
                "tensors where it was made, e.g. torch.save({'model_state': model.state_dict()}, 'clean.pth')"
            ) from None
        raise HieraVideoError(
            f"{path} is corrupt or not a PyTorch checkpoint ({_one_line(text.split('WeightsUnpickler error:')[-1])}); "
            f"download or copy it again{_in_cache_hint(path)}"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, AttributeError, IndexError, struct.error) as e:
        raise HieraVideoError(
            f"{path} is corrupt or truncated ({_one_line(e) or type(e).__name__}); download or copy it again"
            f"{_in_cache_hint(path)}"
        ) from None


def _load_file(path: str) -> tuple[Any, str]:
    """Read one file; returns ``(object, "safetensors" | "torch")``."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise HieraVideoError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if size == 0:
        raise HieraVideoError(
            f"checkpoint {path} is empty (0 bytes): a download or copy was interrupted; get it again{_in_cache_hint(path)}"
        )
    if _is_safetensors(head, size):
        return _load_safetensors(path), "safetensors"
    if path.endswith(".safetensors"):
        raise HieraVideoError(
            f"{path} is not a valid safetensors file (bad header): it is corrupt or truncated; download or copy it again"
            f"{_in_cache_hint(path)}"
        )
    if head[:1] == b"\x80" and head[2:3] != b"\x8a":
        # A pickle that does not start with torch's legacy magic number: a plain Python pickle.
        raise HieraVideoError(
            f"{path} is a plain Python pickle, not a plain-tensor checkpoint: loading it would need full unpickling, "
            "which can run arbitrary code and is refused; save the weights with torch.save(model.state_dict(), ...) "
            "or as safetensors"
        )
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return _torch_load(path), "torch"
    if head.lstrip()[:1] in (b"{", b"["):
        extra = ""
        if os.path.basename(path) == "config.json":
            extra = "; for a hub checkpoint pass the directory that holds config.json and model.safetensors"
        raise HieraVideoError(f"{path} is a JSON file, not a checkpoint{extra}")
    raise HieraVideoError(
        f"{path} is not a PyTorch or safetensors checkpoint (unrecognised file format); pass an official .pth, "
        "a .safetensors file or a hub directory with config.json + model.safetensors"
    )


def _strip_wrapper_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed and sd:
        changed = False
        for p in WRAPPER_PREFIXES:
            if all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
                changed = True
    return sd


def _unwrap(obj: Any, path: str) -> tuple[dict[str, torch.Tensor], dict, Optional[str]]:
    """Top-level object -> ``(state_dict, meta, layout or None)``."""
    if not isinstance(obj, Mapping):
        raise HieraVideoError(
            f"{path} holds a {type(obj).__name__}, not a dict of tensors; pass a state dict or an official checkpoint"
        )
    meta: dict = {}
    layout = None
    inner: Any = obj
    for key in ("model_state", "model", "state_dict", "module"):
        if isinstance(obj.get(key), Mapping):
            inner = obj[key]
            if key == "model_state":
                layout = "official"
            elif key == "model" and isinstance(obj.get("meta"), Mapping):
                meta = dict(obj["meta"])
                layout = FORMAT
            break
    tensors = {k: v for k, v in inner.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors or (inner is obj and len(tensors) != len(obj)):
        keys = _few([str(k) for k in obj], 6)
        raise HieraVideoError(
            f"{path} holds no state dict (top-level keys: {keys}); expected an official checkpoint "
            "({'model_state': state_dict}), a bare state dict or a hiera-video checkpoint"
        )
    return tensors, meta, layout


def _stage_blocks(keys: Iterable[str], pattern: str) -> dict[tuple[int, int], int]:
    """HF ``(stage, layer)`` -> global block index (flattened in stage order)."""
    pairs = {(int(m.group(1)), int(m.group(2))) for k in keys if (m := re.match(pattern, k))}
    depths: dict[int, int] = {}
    for s, layer in pairs:
        depths[s] = max(depths.get(s, 0), layer + 1)
    index, start = {}, 0
    for s in sorted(depths):
        for layer in range(depths[s]):
            index[(s, layer)] = start + layer
        start += depths[s]
    return index


_HF_BLOCK_PARTS = (("layernorm_before.", "norm1."), ("layernorm_after.", "norm2."))
_HF_RENAMES = (
    ("embeddings.patch_embeddings.projection.", "patch_embed.proj."),
    ("embeddings.position_embeddings", "pos_embed"),
    ("pooler.layernorm.", "norm."),
    ("classifier.", "head.projection."),
    ("decoder.decoder_embeddings.", "decoder_embed."),
    ("decoder.decoder_position_embeddings", "decoder_pos_embed"),
    ("decoder.mask_token", "mask_token"),
    ("decoder.decoder_norm.", "decoder_norm."),
    ("decoder.decoder_pred.", "decoder_pred."),
    ("multiscale_fusion.multi_scale_fusion_heads.", "multi_scale_fusion_heads."),
)


def _block_part(rest: str) -> str:
    for old, new in _HF_BLOCK_PARTS:
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest  # attn.qkv, attn.proj, mlp.fc1, mlp.fc2, proj: same names


def _from_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF transformers Hiera keys -> official keys."""
    sd = {(k[len("hiera."):] if k.startswith("hiera.") else k): v for k, v in sd.items()}
    enc = r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.(.+)$"
    index = _stage_blocks(sd, enc)
    out = {}
    for k, v in sd.items():
        if m := re.match(enc, k):
            out[f"blocks.{index[(int(m.group(1)), int(m.group(2)))]}.{_block_part(m.group(3))}"] = v
            continue
        if m := re.match(r"^decoder\.decoder_block\.layers\.(\d+)\.(.+)$", k):
            out[f"decoder_blocks.{m.group(1)}.{_block_part(m.group(2))}"] = v
            continue
        for old, new in _HF_RENAMES:
            if k.startswith(old):
                k = new + k[len(old):]
                break
        out[k] = v
    return out


def _from_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm Hiera keys -> official keys (``head.fc`` -> ``head.projection``, ``head.norm`` -> ``norm``)."""
    out = {}
    for k, v in sd.items():
        if k.startswith("head.fc."):
            k = "head.projection." + k[len("head.fc."):]
        elif k.startswith("head.norm."):
            k = "norm." + k[len("head.norm."):]
        out[k] = v
    return out


def _convert(sd: dict[str, torch.Tensor], path: str) -> tuple[dict[str, torch.Tensor], Optional[str]]:
    """Detect the key layout and convert to official names; returns ``(sd, layout or None)``."""
    sd = _strip_wrapper_prefixes(sd)
    layout = None
    hf_markers = ("embeddings.patch_embeddings.", "encoder.stages.", "hiera.embeddings.", "hiera.encoder.stages.")
    if any(k.startswith(hf_markers) for k in sd):
        sd, layout = _from_hf(sd), "hf-transformers"
    elif "pos_embed_win" in sd:
        raise HieraVideoError(
            f"{path} is a timm 'abswin' Hiera (windowed absolute position embeddings): that is not the official "
            "architecture and cannot be loaded here; use official or timm hiera_*_224 weights"
        )
    elif any(k.startswith(("head.fc.", "head.norm.")) for k in sd) and not any(k.startswith("head.projection.") for k in sd):
        sd, layout = _from_timm(sd), "timm"
    if not ("patch_embed.proj.weight" in sd and any(k.startswith("blocks.") for k in sd)):
        raise HieraVideoError(
            f"{path} is not a Hiera checkpoint: it has {len(sd)} tensors but no patch_embed.proj.weight / blocks.* "
            f"(first keys: {_few(sorted(sd), 3)}); pass Hiera weights (official, hub, timm, HF transformers or hiera-video)"
        )
    return sd, layout


def _config_from_hf(cfg: Mapping) -> dict:
    """HF ``HieraConfig`` -> official constructor kwargs (only the keys it defines)."""
    heads = cfg.get("num_heads")
    out = dict(
        input_size=cfg.get("image_size"), in_chans=cfg.get("num_channels"), embed_dim=cfg.get("embed_dim"),
        stages=cfg.get("depths"), q_pool=cfg.get("num_query_pool"), q_stride=cfg.get("query_stride"),
        mask_unit_size=cfg.get("masked_unit_size"), mask_unit_attn=cfg.get("masked_unit_attention"),
        dim_mul=cfg.get("embed_dim_multiplier"), patch_kernel=cfg.get("patch_size"),
        patch_stride=cfg.get("patch_stride"), patch_padding=cfg.get("patch_padding"),
        mlp_ratio=cfg.get("mlp_ratio"), drop_path_rate=cfg.get("drop_path_rate"),
        decoder_embed_dim=cfg.get("decoder_hidden_size"), decoder_depth=cfg.get("decoder_depth"),
        decoder_num_heads=cfg.get("decoder_num_heads"), mask_ratio=cfg.get("mask_ratio"),
    )
    if isinstance(heads, (list, tuple)) and heads:
        out["num_heads"] = heads[0]
        if len(heads) > 1 and heads[0]:
            out["head_mul"] = heads[1] / heads[0]
    elif isinstance(heads, int):
        out["num_heads"] = heads
    id2label = cfg.get("id2label")
    if isinstance(id2label, Mapping) and id2label and any(
        "Classification" in a for a in cfg.get("architectures") or []
    ):
        out["num_classes"] = len(id2label)
    return {k: v for k, v in out.items() if v is not None}


def _labels_from_hf(cfg: Mapping) -> list[str] | None:
    id2label = cfg.get("id2label")
    if not isinstance(id2label, Mapping) or not any("Classification" in a for a in cfg.get("architectures") or []):
        return None
    try:
        return [str(id2label.get(str(i), id2label.get(i))) for i in range(len(id2label))]
    except (TypeError, ValueError):  # pragma: no cover - odd id2label
        return None


def _block_count(sd: Mapping[str, torch.Tensor], prefix: str) -> int:
    idx = {int(m.group(1)) for k in sd if (m := re.match(rf"^{re.escape(prefix)}(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def _grid(cfg: Mapping) -> list[int] | None:
    try:
        return [int(i) // int(s) for i, s in zip(cfg["input_size"], cfg["patch_stride"])]
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def _check_config(sd: Mapping[str, torch.Tensor], cfg: Mapping, cfg_path: str, weights_path: str) -> None:
    """Compare a config.json with the tensors; any disagreement is an error."""
    bad = []

    def expect(what: str, said, has) -> None:
        if said is not None and has is not None and list(_as_list(said)) != list(_as_list(has)):
            bad.append(f"{what}: config {said}, weights {has}")

    pe = sd.get("patch_embed.proj.weight")
    if pe is not None:
        expect("embed_dim", cfg.get("embed_dim"), int(pe.shape[0]))
        expect("in_chans", cfg.get("in_chans"), int(pe.shape[1]))
        expect("patch_kernel", cfg.get("patch_kernel"), list(pe.shape[2:]))
    if cfg.get("stages") is not None:
        expect("number of blocks", sum(cfg["stages"]), _block_count(sd, "blocks."))
    head = sd.get("head.projection.weight")
    if head is not None and cfg.get("num_classes") is not None:
        expect("num_classes", cfg["num_classes"], int(head.shape[0]))
    grid = _grid(cfg)
    if grid:
        if "pos_embed" in sd:
            expect("position tokens", math.prod(grid), int(sd["pos_embed"].shape[1]))
        if "pos_embed_spatial" in sd:
            expect("spatial position tokens", math.prod(grid[1:]), int(sd["pos_embed_spatial"].shape[1]))
        if "pos_embed_temporal" in sd:
            expect("temporal position tokens", grid[0], int(sd["pos_embed_temporal"].shape[1]))
    if "decoder_embed.weight" in sd:
        expect("decoder_embed_dim", cfg.get("decoder_embed_dim"), int(sd["decoder_embed.weight"].shape[0]))
        expect("decoder_depth", cfg.get("decoder_depth"), _block_count(sd, "decoder_blocks."))
    if bad:
        raise HieraVideoError(
            f"{cfg_path} does not match {weights_path}: {'; '.join(bad)}; the directory mixes files of different "
            "models, download both files of one checkpoint again"
        )


def _check_config_types(cfg: Mapping, defaults: Mapping, cfg_path: str) -> None:
    """Every constructor argument of a config.json must have the type of its default
    (``"stages": "abc"`` used to end in a TypeError traceback): one line naming the key."""

    def scalar_ok(value, default) -> bool:
        if isinstance(default, bool):
            return isinstance(value, bool)
        if isinstance(default, int):
            return isinstance(value, int) and not isinstance(value, bool) and value >= 0
        if isinstance(default, float):
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
        if isinstance(default, str):
            return isinstance(value, str)
        return True

    for key, default in defaults.items():
        if cfg.get(key) is None:  # absent or null: the default applies
            continue
        value = cfg[key]
        if isinstance(default, (list, tuple)):
            ok = isinstance(value, (list, tuple)) and 0 < len(value) <= 16 and all(scalar_ok(v, default[0]) for v in value)
            want = f"a list of {type(default[0]).__name__}s, e.g. {list(default)}"
        else:
            ok = scalar_ok(value, default)
            want = f"a {'non-negative ' if isinstance(default, (int, float)) and not isinstance(default, bool) else ''}" \
                   f"{type(default).__name__}, e.g. {default!r}"
        if not ok:
            raise HieraVideoError(
                f"{cfg_path}: '{key}' must be {want}, got {_one_line(repr(value), 60)}; "
                "download or copy the checkpoint's config.json again"
            )


def _as_list(v):
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HieraVideoError(f"{path} is not a readable JSON config ({_one_line(e)}); download or copy it again") from None
    if not isinstance(cfg, dict):
        raise HieraVideoError(f"{path} is not a model config (expected a JSON object)")
    return cfg


def _load_sharded(index_path: str) -> dict[str, torch.Tensor]:
    index = _read_json(index_path)
    shards = sorted(set((index.get("weight_map") or {}).values()))
    if not shards:
        raise HieraVideoError(f"{index_path} lists no weight files; download the checkpoint again")
    sd: dict[str, torch.Tensor] = {}
    base = os.path.dirname(index_path)
    for shard in shards:
        p = os.path.join(base, shard)
        if not os.path.isfile(p):
            raise HieraVideoError(f"{index_path} names {shard}, which is missing; download the checkpoint again")
        sd.update(_load_safetensors(p))
    return sd


_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def _read_dir(path: str) -> Checkpoint:
    cfg_path = os.path.join(path, "config.json")
    weights = next((os.path.join(path, n) for n in _WEIGHT_FILES if os.path.isfile(os.path.join(path, n))), None)
    if weights is None:
        files = sorted(n for n in os.listdir(path) if n.endswith((".safetensors", ".pth", ".pt", ".bin", ".ckpt")))
        if len(files) == 1:
            weights = os.path.join(path, files[0])
        else:
            found = _few(sorted(os.listdir(path)), 5) or "nothing"
            raise HieraVideoError(
                f"{path} is a directory without model weights (found: {found}); expected config.json + model.safetensors "
                "(official hub layout), or pass the checkpoint file itself"
            )
    cfg = _read_json(cfg_path) if os.path.isfile(cfg_path) else None
    if weights.endswith(".index.json"):
        obj = _load_sharded(weights)
    else:
        obj, _ = _load_file(weights)
    return _finish(obj, weights, cfg, cfg_path if cfg is not None else None)


def _finish(obj: Any, path: str, cfg: Optional[dict], cfg_path: Optional[str]) -> Checkpoint:
    sd, meta, layout = _unwrap(obj, path)
    sd, key_layout = _convert(sd, path)
    is_mae = any(k.startswith(MAE_ONLY_PREFIXES) for k in sd)
    if cfg is not None:
        if cfg.get("model_type") == "hiera":
            try:
                official = _config_from_hf(cfg)
            except (TypeError, ValueError, ZeroDivisionError, AttributeError):
                raise HieraVideoError(
                    f"{cfg_path or 'config.json'} has values of the wrong type (e.g. num_heads); "
                    "download or copy the checkpoint's config.json again"
                ) from None
            labels = _labels_from_hf(cfg)
            if labels and "labels" not in meta:
                meta["labels"] = labels
            layout = layout or "hf-transformers"
        else:
            valid = set(_official_defaults(True))
            official = {k: v for k, v in cfg.items() if k in valid}
            layout = layout or "official-hub"
        full = {**_official_defaults(is_mae), **official}
        _check_config_types(full, _official_defaults(True), cfg_path or "config.json")
        _check_config(sd, full, cfg_path or "config.json", path)
        meta.setdefault("config", full)
        meta.setdefault("config_file", cfg_path)
    layout = key_layout or layout or "official"
    return Checkpoint(state_dict=sd, meta=meta, layout=layout, path=path)


def read_checkpoint(source) -> Checkpoint:
    """Read a checkpoint file or hub directory into official key layout (never unpickles)."""
    path = os.path.abspath(os.path.expanduser(os.fspath(source)))
    if os.path.isdir(path):
        return _read_dir(path)
    if not os.path.exists(path):
        raise HieraVideoError(f"checkpoint not found: {path}")
    obj, _ = _load_file(path)
    # model.safetensors / pytorch_model.bin next to a config.json: read like the directory.
    cfg_path = os.path.join(os.path.dirname(path), "config.json")
    cfg = None
    if os.path.basename(path) in _WEIGHT_FILES and os.path.isfile(cfg_path):
        cfg = _read_json(cfg_path)
    return _finish(obj, path, cfg, cfg_path if cfg is not None else None)


# ====================================================================== 3. applying
@dataclass
class LoadReport:
    """What :func:`apply_checkpoint` did; :meth:`messages` gives the lines worth telling."""

    layout: str
    source: str = ""
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    resized: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)
    head_reset: tuple[int, int] | None = None  # (model classes, checkpoint classes)
    notes: list[str] = field(default_factory=list)

    def messages(self) -> list[str]:
        lines = list(self.notes)
        if self.head_reset is not None:
            n, m = self.head_reset
            lines.append(f"head re-initialised for {n} classes (checkpoint has {m}): train it before trusting predictions")
        for key, old, new in self.resized:
            lines.append(f"resampled {key} {_shape(old)} -> {_shape(new)} to the model's token grid")
        if self.missing:
            lines.append(f"{len(self.missing)} model tensors are not in the checkpoint and keep their initialisation: {_few(self.missing)}")
        if self.unexpected:
            lines.append(f"ignored {len(self.unexpected)} checkpoint tensors the model does not have: {_few(self.unexpected)}")
        if self.mismatched:
            shown = [f"{k} {_shape(a)} vs model {_shape(b)}" for k, a, b in self.mismatched]
            lines.append(f"skipped {len(self.mismatched)} checkpoint tensors of another shape: {_few(shown)}")
        return lines

    def __str__(self) -> str:
        head = f"loaded {self.loaded} tensors from {self.source or 'checkpoint'} ({self.layout} layout)"
        return "\n".join([head, *self.messages()])


def _model_grid(key: str, model: nn.Module) -> list[int] | None:
    tokens = list(getattr(model, "tokens_spatial_shape", []) or [])
    if key == "pos_embed":
        return tokens
    if key == "pos_embed_spatial":
        return tokens[1:]
    if key == "pos_embed_temporal":
        return tokens[:1]
    if key == "decoder_pos_embed":
        final = getattr(model, "tokens_spatial_shape_final", None)
        return list(final) if final is not None else None
    return None  # pragma: no cover


def _grid_for(key: str, cfg: Mapping) -> list[int] | None:
    """The grid of ``key`` for a model built with constructor kwargs ``cfg``."""
    tokens = _grid(cfg)
    if not tokens:
        return None
    if key == "pos_embed":
        return tokens
    if key == "pos_embed_spatial":
        return tokens[1:]
    if key == "pos_embed_temporal":
        return tokens[:1]
    try:
        q = [int(s) ** int(cfg.get("q_pool", 2)) for s in cfg.get("q_stride", [2] * len(tokens))]
        return [t // s for t, s in zip(tokens, q)]
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _source_grid(key: str, length: int, ckpt: Checkpoint, model: nn.Module) -> list[int] | None:
    """Token grid the checkpoint's ``key`` (``length`` tokens) was made for.

    In order: the checkpoint's config; the zoo spec's default input size (official weights
    are made at it); else inferred from the length: a 1-D grid is the length itself, 2-D
    grids are square, 3-D grids keep the model's spatial size (or its temporal size with a
    square spatial grid).
    """
    for cfg in (ckpt.config, getattr(getattr(model, "spec", None), "kwargs", None)):
        if cfg:
            g = _grid_for(key, {**getattr(model, "config", {}), **cfg})
            if g and math.prod(g) == length:
                return g
    target = _model_grid(key, model)
    if not target:
        return None
    if len(target) == 1:
        return [length]
    if len(target) == 2:
        s = math.isqrt(length)
        return [s, s] if s * s == length else None
    if len(target) == 3:
        hw = math.prod(target[1:])
        if length % hw == 0:
            return [length // hw, *target[1:]]
        if length % target[0] == 0:
            s = math.isqrt(length // target[0])
            if s * s * target[0] == length:
                return [target[0], s, s]
    return None


def _describe_weights(sd: Mapping[str, torch.Tensor], model_is_mae: bool) -> str:
    """``"video weights with embed_dim 96, stages (2, 3, 16, 3) (fits: hiera_base_16x224)"``."""
    pe = sd.get("patch_embed.proj.weight")
    if pe is None:
        return ""
    kind = "video" if pe.dim() == 5 else "image" if pe.dim() == 4 else f"{pe.dim() - 2}-D"
    depth = _block_count(sd, "blocks.")
    starts = sorted(i for i in range(1, depth) if f"blocks.{i}.proj.weight" in sd)
    bounds = [0, *starts, depth]
    stages = tuple(b - a for a, b in zip(bounds, bounds[1:]))
    embed = int(pe.shape[0])
    from hiera_video.models.zoo import MODELS

    fits = [
        n for n, s in MODELS.items()
        if s.mae == model_is_mae and s.kwargs.get("embed_dim") == embed and tuple(s.kwargs.get("stages", ())) == stages
        and len(s.kwargs.get("input_size", ())) == pe.dim() - 2
    ]
    text = f"the checkpoint holds {kind} weights with embed_dim {embed} and stages {stages}"
    return text + (f" (fits: {', '.join(fits)})" if fits else "")


def apply_checkpoint(model: nn.Module, ckpt: Checkpoint, strict: bool = True) -> LoadReport:
    """Load ``ckpt`` into ``model`` and say what had to be adapted.

    Never an error: an MAE checkpoint into a classifier (decoder/fusion tensors dropped; the
    final ``norm`` and ``head`` stay initialised), a head of another number of classes
    (re-initialised), a checkpoint without any head (a backbone: the head stays initialised), position embeddings of another token grid (resampled: temporal linear,
    spatial bicubic). Anything else that does not fit (missing or unexpected tensors, other
    shapes, classifier weights into an MAE model, another number of heads...) raises
    :class:`HieraVideoError` when ``strict``, else becomes a line of the report.
    """
    from hiera_video.models.mae import MaskedAutoencoderHiera

    name = _model_name(model)
    src = ckpt.path or "the checkpoint"
    report = LoadReport(layout=ckpt.layout, source=ckpt.path)
    target = model.state_dict()
    sd = dict(ckpt.state_dict)
    expected_missing: set[str] = set()
    problems: list[str] = []

    model_is_mae = isinstance(model, MaskedAutoencoderHiera)
    saved_name = ckpt.meta.get("model") if isinstance(ckpt.meta.get("model"), str) else None
    if saved_name and getattr(getattr(model, "spec", None), "name", None) not in (None, saved_name):
        report.notes.append(f"checkpoint was saved from {saved_name}; loading it into {name}")

    # Same shapes can still mean another computation (e.g. another number of heads).
    cfg = ckpt.config
    model_cfg = getattr(model, "config", None)
    if cfg and isinstance(model_cfg, Mapping):
        # q_pool too, unless MAE weights go into a classifier (the official MAE pretrains with
        # fewer q-pools than its classifiers use; pooling has no parameters).
        keys = SEMANTIC_KEYS + (("q_pool",) if ckpt.is_mae == model_is_mae else ())
        diffs = [
            f"{k}={cfg[k]} (model {model_cfg[k]})" for k in keys
            if k in cfg and k in model_cfg and _as_list(cfg[k]) != _as_list(model_cfg[k])
        ]
        if diffs:
            problems.append(f"the checkpoint was made with {', '.join(diffs)}")

    # ---- MAE <-> classifier
    if not model_is_mae and ckpt.is_mae:
        dropped = [k for k in sd if k.startswith(MAE_ONLY_PREFIXES)]
        for k in dropped:
            del sd[k]
        report.dropped += dropped
        expected_missing |= {k for k in target if k.startswith(CLASSIFIER_ONLY_PREFIXES)}
        report.notes.append(
            f"MAE checkpoint loaded into classifier {name}: kept the encoder, dropped {len(dropped)} decoder/fusion "
            f"tensors ({_groups(dropped)}); the final 'norm' and 'head' are NOT in the checkpoint and keep their "
            "random initialisation, so finetune before using predictions"
        )
    elif model_is_mae and not ckpt.is_mae:
        cls_keys = [k for k in sd if k.startswith(CLASSIFIER_ONLY_PREFIXES)]
        msg = (
            f"{src} holds classifier weights without the MAE decoder that {name} needs; load it into the "
            f"classifier {name.removeprefix('mae_')} instead, or use an MAE checkpoint (e.g. tag mae_k400 / mae_in1k)"
        )
        if strict:
            raise HieraVideoError(msg)
        for k in cls_keys:
            del sd[k]
        report.dropped += cls_keys
        report.notes.append(msg)

    elif not model_is_mae and "head.projection.weight" in target and not any(k.startswith("head.") for k in sd):
        # A backbone without a classifier (timm num_classes=0, HF HieraModel): like a new head.
        expected_missing |= {k for k in target if k.startswith("head.")}
        report.notes.append(
            f"the checkpoint has no classification head: the head of {name} is initialised for "
            f"{int(target['head.projection.weight'].shape[0])} classes; train it before trusting predictions"
        )

    # ---- head of another size
    hw, tw = sd.get("head.projection.weight"), target.get("head.projection.weight")
    if hw is not None and tw is not None and hw.shape[0] != tw.shape[0] and hw.shape[1:] == tw.shape[1:]:
        for k in ("head.projection.weight", "head.projection.bias"):
            sd.pop(k, None)
            expected_missing.add(k)
        report.head_reset = (int(tw.shape[0]), int(hw.shape[0]))
        if hasattr(model, "reset_classifier"):
            model.reset_classifier(int(tw.shape[0]))

    # ---- position embeddings of another grid
    for key in POS_EMBED_KEYS:
        old, new = sd.get(key), target.get(key)
        if old is None or new is None or old.shape == new.shape:
            continue
        if old.dim() != 3 or new.dim() != 3 or old.shape[0] != 1 or old.shape[-1] != new.shape[-1]:
            continue  # another width: a plain shape mismatch below
        old_grid = _source_grid(key, int(old.shape[1]), ckpt, model)
        new_grid = _model_grid(key, model)
        if old_grid is None or not new_grid or math.prod(new_grid) != new.shape[1]:
            problems.append(
                f"cannot tell which token grid {key} {_shape(old)} was made for (no config in the checkpoint and not "
                "a square grid); load it into a model with the input size it was trained at"
            )
            continue
        sd[key] = resample_grid(old, old_grid, new_grid).contiguous()
        report.resized.append((key, tuple(old.shape), tuple(sd[key].shape)))

    # ---- everything else must match
    missing = [k for k in target if k not in sd and k not in expected_missing]
    unexpected = [k for k in sd if k not in target]
    mismatched = [(k, tuple(sd[k].shape), tuple(target[k].shape)) for k in sd if k in target and sd[k].shape != target[k].shape]
    if strict and (missing or unexpected or mismatched or problems):
        parts = list(problems)
        if missing:
            parts.append(f"{len(missing)} model tensors missing from it ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} tensors the model does not have ({_few(unexpected)})")
        if mismatched:
            shown = [f"{k} {_shape(a)} vs model {_shape(b)}" for k, a, b in mismatched]
            parts.append(f"{len(mismatched)} tensors of another shape ({_few(shown)})")
        arch = _describe_weights(sd, model_is_mae)
        raise HieraVideoError(
            f"{src} ({ckpt.layout} layout) does not fit {name}: {'; '.join(parts)}"
            + (f"; {arch}" if arch else "")
            + "; pick the model these weights were made for (or, in Python, apply_checkpoint(model, ckpt, strict=False) "
            "to load only what fits)"
        )
    for k, _, _ in mismatched:
        del sd[k]
    for k in unexpected:
        del sd[k]
    report.notes += problems
    report.missing, report.unexpected, report.mismatched = missing, unexpected, mismatched
    report.initialised = sorted(k for k in expected_missing if k in target)
    with torch.no_grad():
        model.load_state_dict(sd, strict=False)
    report.loaded = len(sd)
    return report


# ====================================================================== project checkpoints
_PLAIN = (type(None), bool, int, float, complex, str, bytes, torch.Tensor, torch.Size, torch.dtype)


def _plain(obj: Any, where: str) -> Any:
    """``obj`` made of types ``torch.load(weights_only=True)`` reads back, or an error."""
    if isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, (os.PathLike, PurePath)):
        return os.fspath(obj)
    if hasattr(obj, "state_dict") and callable(obj.state_dict):  # optimizer, scheduler, scaler
        return _plain(obj.state_dict(), where)
    mod = type(obj).__module__
    if mod == "numpy":
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return torch.from_numpy(obj.copy())
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool, type(None))):
                raise HieraVideoError(f"cannot save checkpoint: key {k!r} in {where} is a {type(k).__name__}; use str or int keys")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return OrderedDict(out) if isinstance(obj, OrderedDict) else out
    if isinstance(obj, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise HieraVideoError(
        f"cannot save checkpoint: {where} is a {type(obj).__module__}.{type(obj).__name__}; keep metadata and "
        "training state to plain Python values (str, int, float, bool, None, lists, dicts) and tensors"
    )


def _unwrapped(model: nn.Module) -> nn.Module:
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def save_checkpoint(path, model: nn.Module, meta: Optional[dict] = None, **extra_state) -> str:
    """Write this project's checkpoint to ``path`` atomically; returns the path.

    File: ``{"format": "hiera-video", "version": 1, "model": state_dict, "meta": meta,
    **extra_state}``. ``meta`` defaults to the model name, its constructor ``config`` and
    ``num_classes``; pass labels, preprocessing, metrics... as plain values. ``extra_state``
    (``optimizer=opt``, ``epoch=3``...): objects with ``state_dict()`` are saved as their state
    dict. Everything must load back with ``torch.load(weights_only=True)``.
    """
    reserved = {"model", "meta", "format", "version"} & set(extra_state)
    if reserved:
        raise HieraVideoError(f"save_checkpoint: {sorted(reserved)} are reserved names; pass them otherwise")
    net = _unwrapped(model)
    spec = getattr(net, "spec", None)
    base: dict = {}
    if spec is not None:
        base["model"] = spec.name
    if isinstance(getattr(net, "config", None), Mapping):
        base["config"] = dict(net.config)
    if getattr(net, "num_classes", None) is not None and hasattr(net, "head"):
        base["num_classes"] = int(net.num_classes)
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": {k: v.detach() for k, v in net.state_dict().items()},
        "meta": _plain({**base, **(meta or {})}, "meta"),
    }
    for k, v in extra_state.items():
        payload[k] = _plain(v, k)

    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    folder = os.path.dirname(path)
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise HieraVideoError(f"cannot write checkpoint {path}: {e.strerror or _one_line(e)}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    return path


def check_resumable(state: Mapping, model: nn.Module, path) -> None:
    """Refuse, in one line, to resume ``model`` from the training checkpoint ``state`` of
    another model (``load_state_dict`` would stop with a size-mismatch traceback)."""
    net = _unwrapped(model)
    meta = state.get("meta") if isinstance(state.get("meta"), Mapping) else {}
    saved, spec = meta.get("model"), getattr(net, "spec", None)
    hint = (f"resume with the config the run was started with, or start a new run in another --output "
            f"(--weights {path} starts from its weights)")
    if spec is not None and isinstance(saved, str):
        from hiera_video.models.zoo import ALIASES

        if ALIASES.get(saved, saved) != spec.name:
            raise HieraVideoError(f"cannot resume from {path}: it is a run of {saved}, but this run builds {spec.name}; {hint}")
    sd = state.get("model") if isinstance(state.get("model"), Mapping) else {}
    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    resized = [f"{k} {_shape(sd[k].shape)} vs {_shape(own[k].shape)}" for k in own
               if k in sd and hasattr(sd[k], "shape") and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or resized:
        what = "; ".join(part for part in (
            f"{len(resized)} tensors of another shape ({_few(resized, 2)})" if resized else "",
            f"{len(missing)} missing ({_groups(missing)})" if missing else "",
            f"{len(unexpected)} unexpected ({_groups(unexpected)})" if unexpected else "",
        ) if part)
        name = spec.name if spec is not None else type(net).__name__
        raise HieraVideoError(f"cannot resume from {path}: its weights do not fit this run's {name} ({what}); {hint}")


def load_training_state(path) -> dict:
    """Everything in a hiera-video checkpoint: ``{"model": sd, "meta": {...}, **extra_state}``."""
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.isfile(path):
        raise HieraVideoError(f"checkpoint not found: {path}")
    obj, kind = _load_file(path)
    if kind != "torch" or not isinstance(obj, Mapping) or not isinstance(obj.get("model"), Mapping) or not isinstance(obj.get("meta"), Mapping):
        raise HieraVideoError(
            f"{path} is not a hiera-video training checkpoint (no 'model' + 'meta'); to start from other weights "
            "pass them as --weights instead of resuming"
        )
    return dict(obj)
