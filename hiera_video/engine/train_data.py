"""Training clips: one decode per video, ``repeated_aug`` clips from it; an item's randomness is seeded by
``(seed, epoch, video index)``, so it is the same on any worker or rank and after a resume."""

import math

import torch
from torch.utils.data import Dataset, Sampler

from hiera_video.data import ClipSpec, TrainTransform, open_video
from hiera_video.data.datasets import VideoDataset
from hiera_video.data.sampling import dense_indices, segment_indices
from hiera_video.errors import HieraVideoError


class Guarded(Dataset):
    """Item ``j`` -> ``(index, dataset[index], None)`` or ``(index, None, reason)`` on a
    :class:`HieraVideoError` (``index = indices[j]`` or ``j``); with ``seed``, seeds ``dataset.generator``."""

    def __init__(self, dataset, indices: list[int] | None = None, seed: int | None = None):
        self.dataset, self.indices, self.seed, self.epoch = dataset, indices, seed, 0

    def __len__(self) -> int:
        return len(self.indices if self.indices is not None else self.dataset)

    def __getitem__(self, j: int):
        i = self.indices[j] if self.indices is not None else j
        if self.seed is not None:
            self.dataset.generator = torch.Generator().manual_seed(
                (self.seed * 1_000_003 + self.epoch * 100_003 + i * 7_919) % (2**63 - 1))
        try:
            return i, self.dataset[i], None
        except HieraVideoError as e:
            return i, None, str(e)


def join_clips(items):  # [(clips [k, 3, T, S, S], labels [k])] -> (clips [sum k, ...], labels [sum k])
    return torch.cat([c for c, _ in items]), torch.cat([lab for _, lab in items])


def collate_items(items, join=join_clips):
    """Collate :class:`Guarded` items: ``(join(good items) or None, their indices, [(index, reason)] of bad)``."""
    good = [(i, x) for i, x, _ in items if x is not None]
    bad = [(i, reason) for i, x, reason in items if x is None]
    return (join([x for _, x in good]) if good else None), [i for i, _ in good], bad


class TrainClips(Dataset):
    """Item = (clips float [k, 3, T, S, S], labels long [k]); random draws from ``generator`` (set by Guarded)."""

    def __init__(self, dataset: VideoDataset, clip: ClipSpec, repeats: int, transform: TrainTransform):
        self.dataset, self.clip, self.repeats, self.transform, self.generator = dataset, clip, repeats, transform, None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item, g = self.dataset.items[index], self.generator
        with open_video(item.path, self.clip.backend) as reader:
            c, n = self.clip, reader.num_frames
            per_clip = [segment_indices(n, c.num_frames, mode="train", generator=g) if c.sampling == "segment" else
                        dense_indices(n, reader.fps, c.num_frames, c.stride, c.target_fps, mode="train", generator=g)
                        for _ in range(self.repeats)]
            union, where = torch.unique(torch.stack(per_clip), sorted=True, return_inverse=True)
            frames = reader.get_frames(union.tolist())
        self.transform.generator = g
        clips, labels, _ = zip(*(self.transform(frames[where[k]], item.label) for k in range(self.repeats)))
        return torch.stack(clips), torch.tensor(labels, dtype=torch.long)


def train_clip_spec(data_cfg, model) -> ClipSpec:
    """The clips ``model`` trains on (checkpoints save its recipe for predict/eval)."""
    return model.spec.clip.with_(sampling=data_cfg.sampling, num_frames=model.input_size[0], stride=data_cfg.stride,
                                 target_fps=data_cfg.target_fps, crop_size=model.input_size[-1], backend=data_cfg.backend)


class EpochSampler(Sampler):
    """A seeded permutation per epoch, sharded over ranks (padded like DistributedSampler), from ``start`` (resume)."""

    def __init__(self, n: int, rank: int, world_size: int, seed: int, videos_per_batch: int):
        self.n, self.rank, self.world_size, self.seed = n, rank, world_size, seed
        self.videos_per_batch, self.epoch, self.start = videos_per_batch, 0, 0

    def per_rank(self) -> int:
        return math.ceil(self.n / self.world_size)

    def batches_per_epoch(self) -> int:
        return self.per_rank() // self.videos_per_batch  # drop_last: every step has a full batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start = epoch, start_batch * self.videos_per_batch

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        total = self.per_rank() * self.world_size
        order += order[: total - self.n]
        return iter(order[self.rank : total : self.world_size][self.start : self.start + len(self)])

    def __len__(self) -> int:
        return self.batches_per_epoch() * self.videos_per_batch - self.start
