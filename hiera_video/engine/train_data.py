"""Training clips: one decode per video, ``repeated_aug`` augmented clips from it.

Every random choice of an item (clip start, crop, flip, RandAugment, erasing) comes from a
generator seeded by ``(seed, epoch, video index)``, so an item is the same whichever worker
or rank makes it, and a resumed run sees exactly the data of an uninterrupted one.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset, Sampler

from hiera_video.data import ClipSpec, TrainTransform, open_video
from hiera_video.data.datasets import VideoDataset
from hiera_video.data.sampling import dense_indices, segment_indices
from hiera_video.errors import HieraVideoError


def item_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 100_003 + index * 7_919) % (2**63 - 1)


class TrainClips(Dataset):
    """Item = (clips float [k, 3, T, S, S], labels long [k], index) or (None, None, index, error)."""

    def __init__(self, dataset: VideoDataset, clip: ClipSpec, repeats: int, transform: TrainTransform, seed: int):
        self.dataset, self.clip, self.repeats, self.transform, self.seed = dataset, clip, repeats, transform, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset.items[index]
        g = torch.Generator().manual_seed(item_seed(self.seed, self.epoch, index))
        try:
            with open_video(item.path, self.clip.backend) as reader:
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
        c = self.clip
        if c.sampling == "segment":
            return segment_indices(reader.num_frames, c.num_frames, mode="train", generator=g)
        return dense_indices(reader.num_frames, reader.fps, c.num_frames, c.stride, c.target_fps, mode="train", generator=g)


def train_clip_spec(data_cfg, model) -> ClipSpec:
    """The clips ``model`` trains on; checkpoints save its :meth:`~ClipSpec.recipe` so that
    predict/eval feed the model exactly as training did."""
    return model.spec.clip.with_(sampling=data_cfg.sampling, num_frames=model.input_size[0], stride=data_cfg.stride,
                                 target_fps=data_cfg.target_fps, crop_size=model.input_size[-1], backend=data_cfg.backend)


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
