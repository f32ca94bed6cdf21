"""hiera-video: run, evaluate, finetune and pretrain Hiera on video."""

from hiera_video.errors import HieraVideoError
from hiera_video.models import create_model, list_models

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "HieraVideoError", "__version__"]
