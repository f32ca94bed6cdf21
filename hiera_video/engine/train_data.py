"""Training clips: one decode per video, ``repeated_aug`` augmented clips from it.

Every random choice of an item (clip start, crop, flip, RandAugment, erasing) comes from a
generator seeded by ``(seed, epoch, video index)``, so an item is the same whichever worker
or rank makes it, and a resumed run sees exactly the data of an uninterrupted one.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset, Sampler

from hiera_video.data import TrainTransform, open_video
from hiera_video.data.datasets import VideoDataset
from hiera_video.data.sampling import dense_indices, segment_indices
from hiera_video.errors import HieraVideoError


def item_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 100_003 + index * 7_919) % (2**63 - 1)


class TrainClips(Dataset):
    """Item = (clips float [k, 3, T, S, S], labels long [k], index) or (None, None, index, error)."""

    def __init__(self, dataset: VideoDataset, num_frames: int, crop_size: int, repeats: int, sampling: str,
                 stride: int, target_fps: float, transform: TrainTransform, seed: int, backend: str = "auto"):
        self.dataset, self.num_frames, self.crop_size, self.repeats = dataset, num_frames, crop_size, repeats
        self.sampling, self.stride, self.target_fps = sampling, stride, target_fps
        self.transform, self.seed, self.backend = transform, seed, backend
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset.items[index]
        g = torch.Generator().manual_seed(item_seed(self.seed, self.epoch, index))
        try:
            with open_video(item.path, self.backend) as reader:
                per_clip = [self._indices(reader, g) for _ in range(self.repeats)]
                # Decode the union of all clips' frames once.
                union, where = torch.unique(torch.stack(per_clip), sorted=True, return_inverse=True)
                frames = reader.get_frames(union.tolist())
        except HieraVideoError as e:
            return None, None, index, str(e)
        self.transform.generator = g
        clips, labels = [], []
        for k in range(self.repeats):
            clip, label, _ = self.transform(frames[where[k]], item.label)
            clips.append(clip)
            labels.append(label)
        return torch.stack(clips), torch.tensor(labels, dtype=torch.long), index, None

    def _indices(self, reader, g) -> torch.Tensor:
        if self.sampling == "segment":
            return segment_indices(reader.num_frames, self.num_frames, mode="train", generator=g)
        return dense_indices(reader.num_frames, reader.fps, self.num_frames, self.stride, self.target_fps, mode="train", generator=g)


def clip_preprocessing(data_cfg, model) -> dict:
    """What predict/eval need to feed ``model`` clips exactly as training did (saved in checkpoints)."""
    spec = model.spec
    return dict(sampling=data_cfg.sampling, stride=data_cfg.stride, target_fps=data_cfg.target_fps,
                num_frames=model.input_size[0], crop_size=model.input_size[-1], mean=list(spec.mean), std=list(spec.std))


def collate_clips(items):
    """Stack the good items' clips; report the bad ones: ``((clips, labels) or None, bad)``
    with ``bad = [(index, reason)]``."""
    good = [it for it in items if it[0] is not None]
    bad = [(it[2], it[3]) for it in items if it[0] is None]
    if not good:
        return None, bad
    return (torch.cat([it[0] for it in good]), torch.cat([it[1] for it in good])), bad


class EpochSampler(Sampler):
    """A seeded permutation per epoch, sharded over ranks (padded to equal length like
    ``DistributedSampler``), starting at ``start`` (the position to resume from)."""

    def __init__(self, n: int, rank: int, world_size: int, seed: int, videos_per_batch: int):
        self.n, self.rank, self.world_size, self.seed = n, rank, world_size, seed
        self.videos_per_batch = videos_per_batch
        self.epoch, self.start = 0, 0

    def per_rank(self) -> int:
        return math.ceil(self.n / self.world_size)

    def batches_per_epoch(self) -> int:
        return self.per_rank() // self.videos_per_batch  # drop_last: every step has a full batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start = epoch, start_batch * self.videos_per_batch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        total = self.per_rank() * self.world_size
        order += order[: total - self.n]
        mine = order[self.rank : total : self.world_size]
        mine = mine[: self.batches_per_epoch() * self.videos_per_batch]
        return iter(mine[self.start :])

    def __len__(self) -> int:
        return self.batches_per_epoch() * self.videos_per_batch - self.start
