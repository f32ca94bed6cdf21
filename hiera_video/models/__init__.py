"""Hiera models: the N-D encoder (models.hiera), its MAE variant, the zoo and checkpoint loading."""
from hiera_video.models.factory import create_model, create_model_and_report, get_spec, list_models
from hiera_video.models.load import Provenance, load
from hiera_video.models.mae import Hiera, MaskedAutoencoderHiera
from hiera_video.models.zoo import MODELS, ModelSpec, Weights
__all__ = ["create_model", "create_model_and_report", "load", "Provenance", "get_spec", "list_models", "Hiera", "MaskedAutoencoderHiera", "MODELS", "ModelSpec", "Weights"]
