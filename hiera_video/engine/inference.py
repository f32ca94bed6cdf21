"""Multi-view classification for predict and eval: views [V, 3, T, S, S] -> logits [V, C] -> mean softmax [C]."""

from dataclasses import dataclass

import torch
import torch.nn as nn

from hiera_video.data import DATASET_PRESETS, ClipSpec
from hiera_video.errors import HieraVideoError
from hiera_video.models.load import Provenance, load
from hiera_video.runtime import autocast, casts_weights, pick_device, resolve_dtype


def parse_views(text: str) -> tuple[int, int]:
    """``"5x3"`` -> (5 temporal, 3 spatial)."""
    try:
        t, s = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise HieraVideoError(f"--views must look like TxS (temporal x spatial), e.g. 5x3; got '{text}'") from None
    if t < 1 or s < 1:
        raise HieraVideoError(f"--views needs at least 1 temporal and 1 spatial view; got '{text}'")
    return t, s


def substitution_warning(substituted: int, sampled: int) -> str | None:
    return (f"{substituted} of {sampled} sampled frames could not be decoded and were replaced by the nearest "
            "decodable frame") if substituted else None


@dataclass
class Classifier:
    """A classifier ready for inference: model on its device and precision, labels, clips, weights' source."""
    model: nn.Module
    name: str
    weights: str | None
    labels: list[str]
    device: torch.device
    dtype: torch.dtype | None
    clip: ClipSpec  # its clips (frames and crop of its input); see protocol
    saved: frozenset[str] = frozenset()  # the clip fields its checkpoint fixed

    def protocol(self, views: tuple[int, int] | None = (1, 1), dataset: str | None = None, **kw) -> ClipSpec:
        """:attr:`clip` under a ``dataset``'s preset (fields the checkpoint saved win), then options ``kw`` (None
        keeps a field), then ``views`` (None keeps them)."""
        spec = self.clip.with_(**{k: v for k, v in DATASET_PRESETS.get(dataset, {}).items() if k not in self.saved}).with_(**kw)
        return spec.with_(**dict(zip(("temporal_views", "spatial_views"), views or ())))

    @torch.inference_mode()
    def logits(self, views: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        """``views: [V, 3, T, H, W]`` -> float32 logits ``[V, C]`` on the CPU, in chunks."""
        logits = torch.cat([run_model(self.model, chunk, self.device, self.dtype, self.model).float().cpu()
                            for chunk in views.split(max(1, min(batch_size, len(views))))])
        if not bool(torch.isfinite(logits).all()):
            raise HieraVideoError(f"the model gave NaN or infinite scores (precision {str(self.dtype or torch.float32).replace('torch.', '')}); "
                                  "try --dtype fp32, or check the weights")
        return logits

    def describe(self) -> dict:
        return dict(model=self.name, weights=self.weights, num_classes=len(self.labels), device=str(self.device),
                    dtype=str(self.dtype).replace("torch.", "") if self.dtype else "float32")


def load_classifier(model: str | None = None, weights: str | None = None, labels: str | None = None, device: str = "auto",
                    dtype: str = "auto", allow_random_weights: bool = False) -> Classifier:
    net, prov = load("classify", model, weights, allow_random=allow_random_weights, labels=labels)
    return classifier_on(net, prov, device, dtype)


def classifier_on(net: nn.Module, prov: Provenance, device: str, dtype: str) -> Classifier:
    dev = pick_device(device)
    net = prepare_inference(net, dev, low := resolve_dtype(dtype, dev))
    clip = prov.clip.with_(num_frames=net.input_size[0], crop_size=net.input_size[-1])  # what the model takes
    return Classifier(net, prov.spec.name, prov.source, prov.labels, dev, low, clip, prov.saved)


def prepare_inference(model: nn.Module, device: torch.device, dtype: torch.dtype | None) -> nn.Module:
    model = model.eval().to(device)  # weights cast to dtype only where casts_weights says (CPU)
    return model.to(dtype) if casts_weights(device, dtype) else model


def run_model(fn, x: torch.Tensor, device: torch.device, dtype: torch.dtype | None, model: nn.Module) -> torch.Tensor:
    """``fn(x)`` in ``dtype``: inputs cast when ``model``'s weights are in it, else under autocast."""
    x = x.to(device, non_blocking=True)
    if dtype is not None and next(model.parameters()).dtype == dtype:
        return fn(x.to(dtype))
    with autocast(device, dtype):
        return fn(x)


def topk(probs: torch.Tensor, labels: list[str], k: int) -> list[dict]:
    scores, idx = probs.topk(min(k, probs.numel()))
    return [dict(index=int(i), label=labels[int(i)], score=float(s)) for s, i in zip(scores, idx)]
