"""Where weights come from: :func:`resolve_source` turns ``weights`` (a zoo tag, a URL or a
local path) into a local path. Zoo tags and URLs go through the torch hub cache
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
