"""Checkpoints, in three steps used by :func:`hiera_video.models.factory.create_model`: ``sources``
(:func:`resolve_source`: a zoo tag, URL, ``hf-hub:ORG/NAME[@REV]`` repo or path -> a local path, downloaded
into the torch hub or Hugging Face cache), ``formats`` (:func:`read_checkpoint`: any supported layout, read
without unpickling, -> official key names) and ``adaptation`` (:func:`apply_checkpoint` -> a :class:`LoadReport`).
``project``: this project's own checkpoint files; ``common``: shared constants and helpers."""

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
