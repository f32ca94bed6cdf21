"""RNG state capture and restore for exact resume.

``rng_state()`` returns only tensors, ints, floats, strings, lists, dicts and None, so it
can be stored inside a checkpoint written with ``torch.save`` and read back with
``torch.load(weights_only=True)`` (no pickled numpy arrays or tuples):

- ``python``: ``random.getstate()`` as ``{"version": int, "state": [625 ints], "gauss_next": float | None}``;
- ``numpy``: the legacy global MT19937 state as ``{"kind", "keys": int64 tensor [624], "pos",
  "has_gauss", "cached_gaussian"}``;
- ``torch``: the CPU generator's ``ByteTensor``;
- ``cuda``: one ``ByteTensor`` per visible CUDA device (only when CUDA is available);
- ``generators``: the states of named ``torch.Generator`` objects passed in (e.g. the
  mixup or augmentation generators).

In distributed training every rank has its own state: save one per rank.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict:
    """Snapshot of the python, numpy, torch (CPU + CUDA) and the given generators' RNGs."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "python": {"version": int(version), "state": [int(v) for v in internal], "gauss_next": gauss_next},
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    if generators:
        state["generators"] = {name: g.get_state() for name, g in generators.items()}
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    """Restore what :func:`rng_state` captured. Missing entries are left alone; CUDA states
    are restored for as many devices as both the snapshot and this machine have."""
    if "python" in state:
        py = state["python"]
        random.setstate((int(py["version"]), tuple(int(v) for v in py["state"]), py["gauss_next"]))
    if "numpy" in state:
        npst = state["numpy"]
        keys = np.asarray(torch.as_tensor(npst["keys"]).cpu().numpy(), dtype=np.uint32)
        np.random.set_state(
            (npst["kind"], keys, int(npst["pos"]), int(npst["has_gauss"]), float(npst["cached_gaussian"]))
        )
    if "torch" in state:
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        saved = list(state["cuda"])
        for i in range(min(len(saved), torch.cuda.device_count())):
            torch.cuda.set_rng_state(torch.as_tensor(saved[i], dtype=torch.uint8).cpu(), device=i)
    for name, g in (generators or {}).items():
        if name in state.get("generators", {}):
            g.set_state(torch.as_tensor(state["generators"][name], dtype=torch.uint8).cpu())
