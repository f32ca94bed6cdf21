"""One rank of a small training job on the real :class:`~hiera_video.engine.trainer.Trainer`,
for tests/test_ddp.py: started with the torchrun environment (RANK, WORLD_SIZE, MASTER_ADDR...).

    python tests/ddp_driver.py OUT UNREADABLE N GLOBAL_BATCH

A linear classifier on N seeded 4-number items (item i: features from seed i, label i % 3),
2 items per micro-batch per process, plain SGD without momentum, decay or clipping. The items
listed in UNREADABLE (comma-separated indices) read as unreadable. Rank 0 saves to OUT: for
every optimizer step, the weights before it and the gradient it applied; and per process the
number of each collective called from Python, DDP constructions, and DDP bucket reductions
(counted by a comm hook that does what DDP does by default)."""

from __future__ import annotations

import sys
from collections import Counter

import torch
import torch.distributed as dist
from torch.utils.data import Dataset

import hiera_video.engine.trainer as trainer_module
from hiera_video.config import load_config
from hiera_video.engine.train_data import Guarded, collate_items
from hiera_video.engine.trainer import Trainer
from hiera_video.errors import HieraVideoError

COLLECTIVES = ("all_reduce", "all_gather_object", "gather_object", "broadcast_object_list", "broadcast", "all_gather",
               "barrier", "scatter_object_list")
PICKLED = ("all_gather_object", "gather_object", "broadcast_object_list", "scatter_object_list")
calls: Counter = Counter()
all_reduce = dist.all_reduce  # the hook's own, not counted as one of the trainer's


def count(name: str):
    real = getattr(dist, name)

    def counted(*args, **kwargs):
        calls[name] += 1
        return real(*args, **kwargs)

    return counted


def item(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(1, 4, generator=torch.Generator().manual_seed(i)), torch.tensor([i % 3])


class Items(Dataset):
    def __init__(self, n: int, unreadable: set[int]):
        self.n, self.unreadable = n, unreadable

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i in self.unreadable:
            raise HieraVideoError("unreadable (test)")
        return item(i)


class CountedDDP(torch.nn.parallel.DistributedDataParallel):
    def __init__(self, *args, **kwargs):
        calls["ddp_constructed"] += 1
        super().__init__(*args, **kwargs)

        def hook(_state, bucket):  # DDP's default: the bucket's mean over processes
            calls["ddp_buckets"] += 1
            tensor = bucket.buffer().div_(dist.get_world_size())
            return all_reduce(tensor, async_op=True).get_future().then(lambda f: f.value()[0])

        self.register_comm_hook(None, hook)


def main(out: str, unreadable: str, n: int, global_batch: int) -> None:
    for name in COLLECTIVES:
        setattr(dist, name, count(name))
    trainer_module.DistributedDataParallel = CountedDDP
    sets = [f"run.output={out}.run", "run.batch_size=2", f"run.global_batch={global_batch}", "optim.name=sgd", "optim.lr=0.5",
            f"optim.base_batch={global_batch}", "optim.momentum=0", "optim.weight_decay=0", "optim.layer_decay=null",
            "optim.clip_grad=null", "optim.epochs=1", "optim.warmup_epochs=0", "optim.min_lr=0.5", "run.precision=fp32",
            "run.device=cpu", "data.workers=0", "data.repeated_aug=1", "run.seed=0"]
    trainer = Trainer(load_config(None, sets))
    steps = []
    with trainer.running():
        trainer.plan(n, 1)
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        trainer.prepare(model, {})
        step = trainer.optimizer.step

        def recorded_step(*args, **kwargs):
            steps.append(dict(weights={k: v.clone() for k, v in model.state_dict().items()},
                              grads={k: p.grad.clone() for k, p in model.named_parameters()}))
            return step(*args, **kwargs)

        trainer.optimizer.step = recorded_step

        def loss_fn(net, batch):
            x, y = batch
            return torch.nn.functional.cross_entropy(net(x), y), x.shape[0]

        # Collectives of the training steps alone (prepare and the final checkpoint excluded).
        before = Counter(calls)
        trainer.fit(Guarded(Items(n, {int(i) for i in unreadable.split(",") if i})), collate_items, loss_fn, str)
        in_fit = Counter(calls)
        in_fit.subtract(before)
        summary = trainer.finish({})
    if trainer.world.is_main:
        torch.save(dict(steps=steps, calls=dict(calls), calls_in_fit=dict(in_fit), summary=summary,
                        world_size=trainer.world.world_size), out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
