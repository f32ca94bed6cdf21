"""Where weights come from: :func:`resolve_source` turns ``weights`` (a zoo tag, a URL, an
``hf-hub:ORG/NAME[@REVISION]`` Hub repo or a local path) into a local path. Hub repos go through
``huggingface_hub`` and its cache (:func:`hub_download`). Zoo tags and URLs go through the torch hub cache
(``$TORCH_HOME/hub/checkpoints/<basename>``, the place ``torch.hub`` uses), so a file fetched
once, by us or by ``torch.hub``, is never fetched again."""

from __future__ import annotations

import http.client
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import PurePath

import torch

from hiera_video.errors import HieraVideoError
from hiera_video.models.checkpoints.common import one_line
from hiera_video.report import atomic_path

DOWNLOAD_TIMEOUT_S = 30.0


def hub_checkpoint_dir() -> str:
    """``<torch hub dir>/checkpoints``: honours ``TORCH_HOME`` and ``torch.hub.set_dir``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def in_cache_hint(path: str) -> str:
    """Extra advice for a bad file that sits in the download cache."""
    try:
        cache = os.path.realpath(hub_checkpoint_dir())
        if os.path.realpath(path).startswith(cache + os.sep):
            return " (it is in the download cache: delete it and it will be downloaded again)"
    except OSError:  # pragma: no cover - unreadable hub dir
        pass
    return ""


def cache_path(url: str) -> str:
    """Where the download cache keeps ``url``: ``<torch hub dir>/checkpoints/<basename>``."""
    name = os.path.basename(urllib.parse.urlparse(url).path)
    if not name:
        raise HieraVideoError(f"cannot name a cache file for URL '{url}': it has no file name; pass a URL that ends in a file name")
    return os.path.join(hub_checkpoint_dir(), name)


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
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "hiera-video"})
        with atomic_path(dest, suffix=".partial", fsync=True) as tmp, open(tmp, "wb") as f, \
                urllib.request.urlopen(request, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            from tqdm.auto import tqdm

            got = 0
            with tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"downloading {name}",
                disable=None if progress else True, leave=False,
            ) as bar:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    f.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            if total is not None and got != total:
                raise OSError(f"connection closed after {got} of {total} bytes")
            if got == 0:
                raise OSError("the server sent an empty file")
    except urllib.error.HTTPError as e:
        raise HieraVideoError(f"could not download {url} to {dest} (HTTP {e.code} {one_line(e.reason)}); {hint}") from None
    except urllib.error.URLError as e:
        raise HieraVideoError(f"could not download {url} to {dest} ({one_line(e.reason)}); {hint}") from None
    except (socket.timeout, TimeoutError):
        raise HieraVideoError(f"could not download {url} to {dest} (no answer within {timeout:g} s); {hint}") from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        reason = one_line(e) or type(e).__name__
        raise HieraVideoError(f"could not download {url} to {dest} ({reason}); {hint}") from None
    return dest


HF_HUB_PREFIX = "hf-hub:"

#: What an ``hf-hub:`` repo is read from, in order: the first weights file the repo has wins.
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def is_hub_spec(weights) -> bool:
    """True for ``hf-hub:ORG/NAME[@REVISION]``."""
    return isinstance(weights, str) and weights.strip().lower().startswith(HF_HUB_PREFIX)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hf_cache_dir() -> str:
    """The Hugging Face Hub cache, read from the environment now (``huggingface_hub`` reads
    it once, at import): ``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else its default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def hub_download(weights: str) -> str:
    """Local snapshot directory of ``hf-hub:ORG/NAME[@REVISION]`` (``config.json`` and the
    first of :data:`HUB_WEIGHT_FILES` the repo has), through ``huggingface_hub``: its cache,
    ``HF_HUB_OFFLINE``, ``HF_TOKEN`` / ``hf auth login`` tokens, ``HF_ENDPOINT`` mirrors and
    resumable downloads. The directory is then read like any local hub folder."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError, GatedRepoError, HfHubHTTPError, HFValidationError, LocalEntryNotFoundError,
        RepositoryNotFoundError, RevisionNotFoundError,
    )

    ref = weights.strip()[len(HF_HUB_PREFIX):].strip()
    repo, at_sign, revision = ref.partition("@")
    if repo.count("/") > 1 or not repo.strip("/") or (at_sign and not revision):
        raise HieraVideoError(f"bad Hub weights '{weights}': expected hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION")
    revision = revision or None
    cache = hf_cache_dir()
    offline = _truthy(os.environ.get("HF_HUB_OFFLINE"))
    endpoint = os.environ.get("HF_ENDPOINT") or None
    where = os.path.join(cache, "models--" + repo.replace("/", "--"))
    at = f"@{revision}" if revision else ""

    def get(filename: str) -> str:
        return hf_hub_download(repo, filename, revision=revision, cache_dir=cache, local_files_only=offline,
                               endpoint=endpoint, library_name="hiera-video")

    missing: list[str] = []
    try:
        try:
            config = get("config.json")
        except EntryNotFoundError as e:
            if isinstance(e, LocalEntryNotFoundError):
                raise
            config = None
        for name in HUB_WEIGHT_FILES:
            try:
                path = get(name)
            except EntryNotFoundError as e:
                if isinstance(e, LocalEntryNotFoundError):
                    raise
                missing.append(name)
                continue
            if config is not None and os.path.dirname(config) != os.path.dirname(path):  # pragma: no cover
                raise HieraVideoError(f"Hub repo {repo}{at} changed while it was downloaded; try again")
            return os.path.dirname(path)
    except LocalEntryNotFoundError:
        if offline:
            raise HieraVideoError(
                f"Hub weights {repo}{at} are not in the Hugging Face cache ({where}) and HF_HUB_OFFLINE=1 forbids "
                "downloading them: download them once online, or unset HF_HUB_OFFLINE"
            ) from None
        raise HieraVideoError(
            f"could not reach the Hub ({endpoint or 'https://huggingface.co'}) for {repo}{at} and it is not in the "
            f"Hugging Face cache ({where}); check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 once it is cached"
        ) from None
    except GatedRepoError:
        raise HieraVideoError(
            f"Hub repo {repo} is gated: accept its terms on the Hub and log in (hf auth login, or set HF_TOKEN)"
        ) from None
    except RepositoryNotFoundError:
        raise HieraVideoError(
            f"Hub repo {repo} not found (or private: log in with hf auth login, or set HF_TOKEN)"
        ) from None
    except RevisionNotFoundError:
        raise HieraVideoError(f"Hub repo {repo} has no revision '{revision}'") from None
    except HFValidationError as e:
        raise HieraVideoError(f"bad Hub weights '{weights}': {one_line(e)}") from None
    except (HfHubHTTPError, OSError) as e:
        raise HieraVideoError(f"could not download {repo}{at} from the Hub into {where} ({one_line(e)})") from None
    raise HieraVideoError(
        f"Hub repo {repo}{at} has no model weights ({' / '.join(missing)} missing); expected config.json + "
        "model.safetensors (official Hiera or transformers' Hiera layout)"
    )


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
    if is_hub_spec(w):
        return hub_download(w)
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
