"""What layout weights are in: :func:`read_checkpoint` reads a file or directory without unpickling and converts
``official`` (``{"model_state": sd}`` or a bare sd), ``official-hub`` (``config.json`` of constructor kwargs, checked
against the tensors, + ``model.safetensors``), ``timm`` (``head.fc.*``), ``hf-transformers`` (``[hiera.]encoder.stages.*``
keys; HF ``config.json``) and ``hiera-video`` (``{"format": "hiera-video", "model": sd, "meta": ...}``) to the official
key names, after removing a wrapper prefix (DDP, ``torch.compile``) that is on every key."""

from __future__ import annotations

import inspect
import json
import math
import os
import pickle
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

import torch

from hiera_video.errors import HieraVideoError, short
from hiera_video.models.checkpoints.common import (FORMAT, MAE_ONLY_PREFIXES, WRAPPER_PREFIXES, as_list, block_count,
                                                   few, token_grid)
from hiera_video.models.checkpoints.sources import hub_download, in_cache_hint, is_hub_spec
from hiera_video.models.hiera import Hiera
from hiera_video.models.mae import MaskedAutoencoderHiera


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

    is_mae = property(lambda self: any(k.startswith(MAE_ONLY_PREFIXES) for k in self.state_dict))
    #: Official constructor kwargs the weights were made with, when known.
    config = property(lambda self: self.meta.get("config") if isinstance(self.meta.get("config"), Mapping) else None)


def official_defaults(mae: bool) -> dict:
    """Default constructor kwargs of the official classes (what a partial config.json omits)."""
    return {p.name: list(p.default) if isinstance(p.default, tuple) else p.default
            for cls in ((Hiera, MaskedAutoencoderHiera) if mae else (Hiera,))
            for p in inspect.signature(cls.__init__).parameters.values() if p.default is not inspect.Parameter.empty}


def _load_safetensors(path: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise HieraVideoError(f"{path} is not a readable safetensors file ({short(e)}): it is corrupt or truncated; "
                              f"download or copy it again{in_cache_hint(path)}") from None


def _torch_load(path: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if m := re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"([\w.]+) was not an allowed global", text):
            raise HieraVideoError(
                f"{path} is not a plain-tensor checkpoint: it contains a pickled Python object ({m.group(1)}) and "
                "loading it would need full unpickling, which can run arbitrary code and is refused; re-save just the "
                "tensors where it was made, e.g. torch.save({'model_state': model.state_dict()}, 'clean.pth')") from None
        raise HieraVideoError(f"{path} is corrupt or not a PyTorch checkpoint ({short(text.split('WeightsUnpickler error:')[-1])}); "
                              f"download or copy it again{in_cache_hint(path)}") from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, AttributeError, IndexError, struct.error) as e:
        raise HieraVideoError(f"{path} is corrupt or truncated ({short(e) or type(e).__name__}); download or copy it again"
                              f"{in_cache_hint(path)}") from None


def load_file(path: str) -> tuple[Any, str]:
    """Read one file; returns ``(object, "safetensors" | "torch")``."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise HieraVideoError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if size == 0:
        raise HieraVideoError(f"checkpoint {path} is empty (0 bytes): a download or copy was interrupted; get it again"
                              f"{in_cache_hint(path)}")
    if len(head) >= 10 and 0 < struct.unpack("<Q", head[:8])[0] <= size - 8 and head[8:9] == b"{":  # safetensors header
        return _load_safetensors(path), "safetensors"
    if path.endswith(".safetensors"):
        raise HieraVideoError(f"{path} is not a valid safetensors file (bad header): it is corrupt or truncated; download or "
                              f"copy it again{in_cache_hint(path)}")
    if head[:1] == b"\x80" and head[2:3] != b"\x8a":  # a pickle without torch's legacy magic number
        raise HieraVideoError(
            f"{path} is a plain Python pickle, not a plain-tensor checkpoint: loading it would need full unpickling, "
            "which can run arbitrary code and is refused; save the weights with torch.save(model.state_dict(), ...) "
            "or as safetensors")
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return _torch_load(path), "torch"
    if head.lstrip()[:1] in (b"{", b"[") and head.isascii():  # not binary data that starts with a brace
        extra = "; for a hub checkpoint pass the directory that holds config.json and model.safetensors"
        raise HieraVideoError(f"{path} is a JSON file, not a checkpoint{extra if os.path.basename(path) == 'config.json' else ''}")
    raise HieraVideoError(f"{path} is not a PyTorch or safetensors checkpoint (unrecognised file format); pass an official "
                          ".pth, a .safetensors file or a hub directory with config.json + model.safetensors")


def _strip_wrapper_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    while sd and (prefix := next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in sd)), None)):
        sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _unwrap(obj: Any, path: str) -> tuple[dict[str, torch.Tensor], dict, Optional[str]]:
    """Top-level object -> ``(state_dict, meta, layout or None)``."""
    if not isinstance(obj, Mapping):
        raise HieraVideoError(f"{path} holds a {type(obj).__name__}, not a dict of tensors; pass a state dict or an official "
                              "checkpoint")
    meta, layout, inner = {}, None, obj
    for key in ("model_state", "model", "state_dict", "module"):
        if isinstance(obj.get(key), Mapping):
            inner = obj[key]
            if key == "model_state":
                layout = "official"
            elif key == "model" and isinstance(obj.get("meta"), Mapping):
                meta, layout = dict(obj["meta"]), FORMAT
            break
    tensors = {k: v for k, v in inner.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors or (inner is obj and len(tensors) != len(obj)):
        raise HieraVideoError(f"{path} holds no state dict (top-level keys: {few([str(k) for k in obj], 6)}); expected an "
                              "official checkpoint ({'model_state': state_dict}), a bare state dict or a hiera-video checkpoint")
    return tensors, meta, layout


def _stage_blocks(keys: Iterable[str], pattern: str) -> dict[tuple[int, int], int]:
    """HF ``(stage, layer)`` -> global block index (flattened in stage order)."""
    pairs = {(int(m.group(1)), int(m.group(2))) for k in keys if (m := re.match(pattern, k))}
    depths: dict[int, int] = {}
    for s, layer in pairs:
        depths[s] = max(depths.get(s, 0), layer + 1)
    return {(s, layer): sum(d for t, d in depths.items() if t < s) + layer for s, layer in pairs}


# Key prefix renames: the first match applies. Block parts not listed have the same names.
_HF_BLOCK_PARTS = (("layernorm_before.", "norm1."), ("layernorm_after.", "norm2."))
_HF_RENAMES = (
    ("embeddings.patch_embeddings.projection.", "patch_embed.proj."), ("embeddings.position_embeddings", "pos_embed"),
    ("pooler.layernorm.", "norm."), ("classifier.", "head.projection."), ("decoder.decoder_embeddings.", "decoder_embed."),
    ("decoder.decoder_position_embeddings", "decoder_pos_embed"), ("decoder.mask_token", "mask_token"),
    ("decoder.decoder_norm.", "decoder_norm."), ("decoder.decoder_pred.", "decoder_pred."),
    ("multiscale_fusion.multi_scale_fusion_heads.", "multi_scale_fusion_heads."))
_TIMM_RENAMES = (("head.fc.", "head.projection."), ("head.norm.", "norm."))


def _rename(key: str, renames: Iterable[tuple[str, str]]) -> str:
    return next((new + key[len(old):] for old, new in renames if key.startswith(old)), key)


def _from_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF transformers Hiera keys -> official keys."""
    sd = {(k[len("hiera."):] if k.startswith("hiera.") else k): v for k, v in sd.items()}
    enc = r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.(.+)$"
    index = _stage_blocks(sd, enc)
    out = {}
    for k, v in sd.items():
        if m := re.match(enc, k):
            k = f"blocks.{index[(int(m.group(1)), int(m.group(2)))]}.{_rename(m.group(3), _HF_BLOCK_PARTS)}"
        elif m := re.match(r"^decoder\.decoder_block\.layers\.(\d+)\.(.+)$", k):
            k = f"decoder_blocks.{m.group(1)}.{_rename(m.group(2), _HF_BLOCK_PARTS)}"
        else:
            k = _rename(k, _HF_RENAMES)
        out[k] = v
    return out


def _convert(sd: dict[str, torch.Tensor], path: str) -> tuple[dict[str, torch.Tensor], Optional[str]]:
    """Detect the key layout and convert to official names; returns ``(sd, layout or None)``."""
    sd, layout = _strip_wrapper_prefixes(sd), None
    hf_markers = ("embeddings.patch_embeddings.", "encoder.stages.", "hiera.embeddings.", "hiera.encoder.stages.")
    if any(k.startswith(hf_markers) for k in sd):
        sd, layout = _from_hf(sd), "hf-transformers"
    elif "pos_embed_win" in sd:
        raise HieraVideoError(f"{path} is a timm 'abswin' Hiera (windowed absolute position embeddings): that is not the "
                              "official architecture and cannot be loaded here; use official or timm hiera_*_224 weights")
    elif any(k.startswith(("head.fc.", "head.norm.")) for k in sd) and not any(k.startswith("head.projection.") for k in sd):
        sd, layout = {_rename(k, _TIMM_RENAMES): v for k, v in sd.items()}, "timm"
    if not ("patch_embed.proj.weight" in sd and any(k.startswith("blocks.") for k in sd)):
        raise HieraVideoError(f"{path} is not a Hiera checkpoint: it has {len(sd)} tensors but no patch_embed.proj.weight / "
                              f"blocks.* (first keys: {few(sorted(sd), 3)}); pass Hiera weights (official, hub, timm, HF "
                              "transformers or hiera-video)")
    return sd, layout


_HF_CONFIG = (  # (official argument, HieraConfig key)
    ("input_size", "image_size"), ("in_chans", "num_channels"), ("stages", "depths"), ("q_pool", "num_query_pool"),
    ("q_stride", "query_stride"), ("mask_unit_size", "masked_unit_size"), ("mask_unit_attn", "masked_unit_attention"),
    ("dim_mul", "embed_dim_multiplier"), ("patch_kernel", "patch_size"), ("decoder_embed_dim", "decoder_hidden_size"),
) + tuple((k, k) for k in ("embed_dim", "patch_stride", "patch_padding", "mlp_ratio", "drop_path_rate", "decoder_depth",
                           "decoder_num_heads", "mask_ratio"))


def _config_from_hf(cfg: Mapping) -> dict:
    """HF ``HieraConfig`` -> official constructor kwargs (only the keys it defines)."""
    heads, out = cfg.get("num_heads"), {ours: cfg.get(theirs) for ours, theirs in _HF_CONFIG}
    if isinstance(heads, (list, tuple)) and heads:
        out["num_heads"] = heads[0]
        if len(heads) > 1 and heads[0]:
            out["head_mul"] = heads[1] / heads[0]
    elif isinstance(heads, int):
        out["num_heads"] = heads
    if labels := _labels_from_hf(cfg):
        out["num_classes"] = len(labels)
    return {k: v for k, v in out.items() if v is not None}


def _labels_from_hf(cfg: Mapping) -> list[str] | None:
    """Class names of an HF classifier config (``id2label``), else None."""
    if not isinstance(id2label := cfg.get("id2label"), Mapping) or not any("Classification" in a for a in cfg.get("architectures") or []):
        return None
    return [str(id2label.get(str(i), id2label.get(i))) for i in range(len(id2label))]


def _check_config(sd: Mapping[str, torch.Tensor], cfg: Mapping, cfg_path: str, weights_path: str) -> None:
    """Compare a config.json with the tensors; any disagreement is an error."""
    bad, pe = [], sd.get("patch_embed.proj.weight")

    def expect(what: str, said, has) -> None:  # None on either side: nothing to compare
        if said is not None and has is not None and list(as_list(said)) != list(as_list(has)):
            bad.append(f"{what}: config {said}, weights {has}")

    def size(key: str, dim: int) -> int | None:
        return int(sd[key].shape[dim]) if key in sd else None

    expect("embed_dim", cfg.get("embed_dim"), size("patch_embed.proj.weight", 0))
    expect("in_chans", cfg.get("in_chans"), size("patch_embed.proj.weight", 1))
    expect("patch_kernel", cfg.get("patch_kernel"), list(pe.shape[2:]) if pe is not None else None)
    if cfg.get("stages") is not None:
        expect("number of blocks", sum(cfg["stages"]), block_count(sd, "blocks."))
    expect("num_classes", cfg.get("num_classes"), size("head.projection.weight", 0))
    if grid := token_grid(cfg):
        expect("position tokens", math.prod(grid), size("pos_embed", 1))
        expect("spatial position tokens", math.prod(grid[1:]), size("pos_embed_spatial", 1))
        expect("temporal position tokens", grid[0], size("pos_embed_temporal", 1))
    if "decoder_embed.weight" in sd:
        expect("decoder_embed_dim", cfg.get("decoder_embed_dim"), size("decoder_embed.weight", 0))
        expect("decoder_depth", cfg.get("decoder_depth"), block_count(sd, "decoder_blocks."))
    if bad:
        raise HieraVideoError(f"{cfg_path} does not match {weights_path}: {'; '.join(bad)}; the directory mixes files of "
                              "different models, download both files of one checkpoint again")


def _check_config_types(cfg: Mapping, defaults: Mapping, cfg_path: str) -> None:
    """Every constructor argument of a config.json must have the type of its default: one line naming the key."""
    def scalar_ok(value, default) -> bool:
        if isinstance(default, (bool, str)):
            return isinstance(value, type(default))
        if isinstance(default, int):
            return isinstance(value, int) and not isinstance(value, bool) and value >= 0
        if isinstance(default, float):
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
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
            raise HieraVideoError(f"{cfg_path}: '{key}' must be {want}, got {short(repr(value), 60)}; "
                                  "download or copy the checkpoint's config.json again")


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HieraVideoError(f"{path} is not a readable JSON config ({short(e)}); download or copy it again") from None
    if not isinstance(cfg, dict):
        raise HieraVideoError(f"{path} is not a model config (expected a JSON object)")
    return cfg


def _load_sharded(index_path: str) -> dict[str, torch.Tensor]:
    shards = sorted(set((_read_json(index_path).get("weight_map") or {}).values()))
    if not shards:
        raise HieraVideoError(f"{index_path} lists no weight files; download the checkpoint again")
    sd, base = {}, os.path.dirname(index_path)
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
        if len(files) != 1:
            raise HieraVideoError(f"{path} is a directory without model weights (found: {few(sorted(os.listdir(path)), 5) or 'nothing'}); "
                                  "expected config.json + model.safetensors (official hub layout), or pass the checkpoint file itself")
        weights = os.path.join(path, files[0])
    cfg = _read_json(cfg_path) if os.path.isfile(cfg_path) else None
    obj = _load_sharded(weights) if weights.endswith(".index.json") else load_file(weights)[0]
    return _finish(obj, weights, cfg, cfg_path)


#: Safetensors metadata key where ``export --format hub`` keeps the model name, class names and clip recipe.
SAFETENSORS_META_KEY = "hiera_video"


def _safetensors_meta(path: str) -> dict:
    """``model`` / ``labels`` / ``preprocessing`` from a safetensors file's metadata; {} if none or unreadable."""
    if not path.endswith(".safetensors"):
        return {}
    try:
        from safetensors import safe_open
        with safe_open(path, "pt") as f:
            raw = (f.metadata() or {}).get(SAFETENSORS_META_KEY)
        data = json.loads(raw) if raw else {}
    except Exception:  # noqa: BLE001 - metadata is optional; the tensors were read already
        return {}
    if not isinstance(data, dict):
        return {}
    out = {k: data[k] for k, t in (("model", str), ("labels", list), ("preprocessing", dict)) if isinstance(data.get(k), t)}
    return {**out, "labels": [str(x) for x in out["labels"]]} if "labels" in out else out


def _finish(obj: Any, path: str, cfg: Optional[dict], cfg_path: str) -> Checkpoint:  # cfg: read from cfg_path
    sd, meta, layout = _unwrap(obj, path)
    if layout == FORMAT and meta.get("task") == "ava":  # our own detector: say so, not "not a Hiera checkpoint"
        raise HieraVideoError(
            f"{path} is an AVA action detector (saved by hiera-video finetune --dataset ava), not classifier weights: "
            f"score it with hiera-video eval --dataset ava --weights {path} (or resume it with finetune --dataset ava "
            "--resume); predict, extract, export and classification eval take Hiera classifier or MAE weights")
    sd, key_layout = _convert(sd, path)
    meta.update({k: v for k, v in _safetensors_meta(path).items() if k not in meta})
    if cfg is not None:
        if cfg.get("model_type") == "hiera":
            try:
                official = _config_from_hf(cfg)
            except (TypeError, ValueError, ZeroDivisionError, AttributeError):
                raise HieraVideoError(f"{cfg_path} has values of the wrong type (e.g. num_heads); download or copy the "
                                      "checkpoint's config.json again") from None
            if (labels := _labels_from_hf(cfg)) and "labels" not in meta:
                meta["labels"] = labels
            layout = layout or "hf-transformers"
        else:
            official = {k: v for k, v in cfg.items() if k in official_defaults(True)}
            layout = layout or "official-hub"
        full = {**official_defaults(any(k.startswith(MAE_ONLY_PREFIXES) for k in sd)), **official}
        _check_config_types(full, official_defaults(True), cfg_path)
        _check_config(sd, full, cfg_path, path)
        meta.setdefault("config", full)
        meta.setdefault("config_file", cfg_path)
    return Checkpoint(state_dict=sd, meta=meta, layout=key_layout or layout or "official", path=path)


def read_checkpoint(source) -> Checkpoint:
    """Read a checkpoint file, hub directory or ``hf-hub:`` repo into official key layout (never unpickles)."""
    if is_hub_spec(source):
        source = hub_download(source)
    path = os.path.abspath(os.path.expanduser(os.fspath(source)))
    if os.path.isdir(path):
        return _read_dir(path)
    if not os.path.exists(path):
        raise HieraVideoError(f"checkpoint not found: {path}")
    obj, _ = load_file(path)  # model.safetensors / pytorch_model.bin next to a config.json: read like the directory
    cfg_path = os.path.join(os.path.dirname(path), "config.json")
    cfg = _read_json(cfg_path) if os.path.basename(path) in _WEIGHT_FILES and os.path.isfile(cfg_path) else None
    return _finish(obj, path, cfg, cfg_path)
