"""Where weights come from: :func:`resolve_source` turns a zoo tag, URL, ``hf-hub:ORG/NAME[@REVISION]`` repo or
path into a local path. Hub repos go through ``huggingface_hub`` and its cache; zoo tags and URLs through the
torch hub cache (``$TORCH_HOME/hub/checkpoints/<basename>``), shared with ``torch.hub``."""

from __future__ import annotations

import http.client
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import PurePath

import torch

from hiera_video.errors import HieraVideoError, short
from hiera_video.report import atomic_path

DOWNLOAD_TIMEOUT_S = 30.0


def in_cache_hint(path: str) -> str:
    """Extra advice for a bad file that sits in the download cache."""
    in_cache = os.path.realpath(path).startswith(os.path.realpath(os.path.join(torch.hub.get_dir(), "checkpoints")) + os.sep)
    return " (it is in the download cache: delete it and it will be downloaded again)" if in_cache else ""


def cache_path(url: str) -> str:
    """``<torch hub dir>/checkpoints/<basename of url>`` (honours ``TORCH_HOME`` and ``torch.hub.set_dir``)."""
    if not (name := os.path.basename(urllib.parse.urlparse(url).path)):
        raise HieraVideoError(f"cannot name a cache file for URL '{url}': it has no file name; pass a URL that ends in a file name")
    return os.path.join(torch.hub.get_dir(), "checkpoints", name)


def download_cached(url: str, progress: bool = True, timeout: float = DOWNLOAD_TIMEOUT_S) -> str:
    """The cached copy of ``url``, downloaded first (to a temporary file renamed into place when complete)."""
    dest = cache_path(url)
    if os.path.isfile(dest) and os.path.getsize(dest) > 0:
        return dest
    name = os.path.basename(dest)
    hint = f"if this machine is offline, get the file elsewhere and pass it with --weights /path/to/{name} (or put it at {dest})"
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "hiera-video"})
        with atomic_path(dest, suffix=".partial", fsync=True) as tmp, open(tmp, "wb") as f, \
                urllib.request.urlopen(request, timeout=timeout) as resp:
            from tqdm.auto import tqdm
            length, got = resp.headers.get("Content-Length"), 0
            total = int(length) if length and length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"downloading {name}",
                      disable=None if progress else True, leave=False) as bar:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    f.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            if total is not None and got != total:
                raise OSError(f"connection closed after {got} of {total} bytes")
            if got == 0:
                raise OSError("the server sent an empty file")
    except urllib.error.HTTPError as e:
        raise HieraVideoError(f"could not download {url} to {dest} (HTTP {e.code} {short(e.reason)}); {hint}") from None
    except urllib.error.URLError as e:
        raise HieraVideoError(f"could not download {url} to {dest} ({short(e.reason)}); {hint}") from None
    except (socket.timeout, TimeoutError):
        raise HieraVideoError(f"could not download {url} to {dest} (no answer within {timeout:g} s); {hint}") from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise HieraVideoError(f"could not download {url} to {dest} ({short(e) or type(e).__name__}); {hint}") from None
    return dest


HF_HUB_PREFIX, HUB_WEIGHT_FILES = "hf-hub:", ("model.safetensors", "pytorch_model.bin")  # the first a repo has wins


def is_hub_spec(weights) -> bool:
    """True for ``hf-hub:ORG/NAME[@REVISION]``."""
    return isinstance(weights, str) and weights.strip().lower().startswith(HF_HUB_PREFIX)


def hf_cache_dir() -> str:
    """The Hugging Face Hub cache, read from the environment now (``huggingface_hub`` reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    from huggingface_hub import constants
    return constants.HF_HUB_CACHE


def hub_download(weights: str) -> str:
    """Local snapshot directory of ``hf-hub:ORG/NAME[@REVISION]`` (``config.json`` and the first of
    :data:`HUB_WEIGHT_FILES` it has) through ``huggingface_hub``: its cache, ``HF_HUB_OFFLINE``, tokens,
    ``HF_ENDPOINT`` mirrors and resumable downloads."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError, GatedRepoError, HfHubHTTPError, HFValidationError, LocalEntryNotFoundError,
        RepositoryNotFoundError, RevisionNotFoundError,
    )

    repo, at_sign, revision = weights.strip()[len(HF_HUB_PREFIX):].strip().partition("@")
    if repo.count("/") > 1 or not repo.strip("/") or (at_sign and not revision):
        raise HieraVideoError(f"bad Hub weights '{weights}': expected hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION")
    revision, cache, endpoint = revision or None, hf_cache_dir(), os.environ.get("HF_ENDPOINT") or None
    offline = (os.environ.get("HF_HUB_OFFLINE") or "").strip().upper() in ("1", "ON", "YES", "TRUE")
    where, at = os.path.join(cache, "models--" + repo.replace("/", "--")), f"@{revision}" if revision else ""

    def get(filename: str) -> str | None:  # None: the repo has no such file
        try:
            return hf_hub_download(repo, filename, revision=revision, cache_dir=cache, local_files_only=offline,
                                   endpoint=endpoint, library_name="hiera-video")
        except EntryNotFoundError as e:
            if isinstance(e, LocalEntryNotFoundError):
                raise
            return None

    missing: list[str] = []
    try:
        config = get("config.json")
        for name in HUB_WEIGHT_FILES:
            if (path := get(name)) is None:
                missing.append(name)
                continue
            if config is not None and os.path.dirname(config) != os.path.dirname(path):  # pragma: no cover
                raise HieraVideoError(f"Hub repo {repo}{at} changed while it was downloaded; try again")
            return os.path.dirname(path)
    except LocalEntryNotFoundError:
        if offline:
            raise HieraVideoError(f"Hub weights {repo}{at} are not in the Hugging Face cache ({where}) and HF_HUB_OFFLINE=1 "
                                  "forbids downloading them: download them once online, or unset HF_HUB_OFFLINE") from None
        raise HieraVideoError(f"could not reach the Hub ({endpoint or 'https://huggingface.co'}) for {repo}{at} and it is "
                              f"not in the Hugging Face cache ({where}); check the network or HF_ENDPOINT, or set "
                              "HF_HUB_OFFLINE=1 once it is cached") from None
    except GatedRepoError:
        raise HieraVideoError(f"Hub repo {repo} is gated: accept its terms on the Hub and log in (hf auth login, or set HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise HieraVideoError(f"Hub repo {repo} not found (or private: log in with hf auth login, or set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise HieraVideoError(f"Hub repo {repo} has no revision '{revision}'") from None
    except HFValidationError as e:
        raise HieraVideoError(f"bad Hub weights '{weights}': {short(e)}") from None
    except (HfHubHTTPError, OSError) as e:
        raise HieraVideoError(f"could not download {repo}{at} from the Hub into {where} ({short(e)})") from None
    raise HieraVideoError(f"Hub repo {repo}{at} has no model weights ({' / '.join(missing)} missing); expected config.json + "
                          "model.safetensors (official Hiera or transformers' Hiera layout)")


def resolve_source(spec, weights) -> str:
    """Local path of ``weights`` (a weights tag of ``spec``, an http(s) or file URL, a path) for zoo model ``spec``."""
    if weights is None or not str(os.fspath(weights)).strip():
        raise HieraVideoError("no weights given: pass a weights tag, a URL or a path")
    w = str(os.fspath(weights)).strip()
    tags, name = dict(getattr(spec, "weights", {}) or {}), getattr(spec, "name", "this model")
    if w in tags:
        return download_cached(tags[w].url)
    if is_hub_spec(w):
        return hub_download(w)
    parsed = urllib.parse.urlparse(w)
    if (scheme := parsed.scheme.lower()) in ("http", "https"):
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
        raise HieraVideoError(f"unknown weights '{w}' for {name}: not a file, and not one of its weights tags "
                              f"(available: {available})")
    raise HieraVideoError(f"weights file not found: {path} (weights tags of {name}: {available})")
