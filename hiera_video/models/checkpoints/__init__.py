"""Checkpoints: where weights come from, what layout they are in, and how they fit a model.

Three steps, used by :func:`hiera_video.models.factory.create_model`, one module each:

1. ``sources``: :func:`resolve_source` turns ``weights`` (a zoo tag, a URL, an
   ``hf-hub:ORG/NAME[@REVISION]`` repo or a local path) into a local path, downloading into
   the torch hub cache (the Hugging Face cache for ``hf-hub:``) when needed.
2. ``formats``: :func:`read_checkpoint` reads a file or directory without unpickling and
   converts every supported layout (official, official hub, timm, HF transformers,
   hiera-video) to the official key names, as a :class:`Checkpoint`.
3. ``adaptation``: :func:`apply_checkpoint` loads a :class:`Checkpoint` into a model in small
   steps (MAE into classifier, head reset, position-embedding resampling, the strict
   comparison), each adding to one :class:`LoadReport`.

``project``: :func:`save_checkpoint` / :func:`load_training_state` / :func:`check_resumable`
for this project's own checkpoint files. ``common``: the shared constants and helpers.
"""

from hiera_video.models.checkpoints.adaptation import LoadReport, apply_checkpoint
from hiera_video.models.checkpoints.common import (
    CLASSIFIER_ONLY_PREFIXES, FORMAT, FORMAT_VERSION, MAE_ONLY_PREFIXES, POS_EMBED_KEYS, SEMANTIC_KEYS,
    WRAPPER_PREFIXES, block_count,
)
from hiera_video.models.checkpoints.formats import Checkpoint, official_defaults, read_checkpoint
from hiera_video.models.checkpoints.project import check_resumable, load_training_state, save_checkpoint
from hiera_video.models.checkpoints.sources import DOWNLOAD_TIMEOUT_S, cache_path, download_cached, resolve_source

__all__ = [
    "CLASSIFIER_ONLY_PREFIXES", "DOWNLOAD_TIMEOUT_S", "FORMAT", "FORMAT_VERSION", "MAE_ONLY_PREFIXES", "POS_EMBED_KEYS",
    "SEMANTIC_KEYS", "WRAPPER_PREFIXES", "Checkpoint", "LoadReport", "apply_checkpoint", "block_count", "cache_path",
    "check_resumable", "download_cached", "load_training_state", "official_defaults", "read_checkpoint",
    "resolve_source", "save_checkpoint",
]
