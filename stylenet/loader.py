"""The training loader whose position survives a restart: a resumed run goes on with the batch
after its checkpoint, in the same order and with the same random crops, instead of restarting the
epoch in a new order. Lightning saves the loader's state_dict() in each checkpoint and calls
load_state_dict() on resume (torchdata's StatefulDataLoader would need a new dependency, and its
random crops would follow the workers' RNG state, not the photo)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, DistributedSampler


class ResumableSampler(DistributedSampler):
    """Training order: `indices` shuffled by (seed, epoch), sharded over DDP ranks, each index
    paired with a crop seed drawn from (seed, epoch, index) so random crops do not depend on
    which worker or process loads the photo. `start` skips that many samples of the next epoch
    pass (a resumed run). A DistributedSampler so that Lightning keeps it under DDP instead of
    wrapping it in its own, which would reshuffle and ignore `start`."""

    def __init__(self, indices: list[int], seed: int, num_replicas: int | None = None,
                 rank: int | None = None, shuffle: bool = True):
        if num_replicas is None or rank is None:
            dist = torch.distributed
            on = dist.is_available() and dist.is_initialized()
            num_replicas = dist.get_world_size() if on else 1
            rank = dist.get_rank() if on else 0
        super().__init__(list(indices), num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=True)
        self.start = 0
        self.start_epoch = 0

    def resume_at(self, epoch: int, start: int) -> None:
        """Skip the first `start` samples of `epoch` (only of that epoch: a checkpoint from the
        end of an epoch is resumed by Lightning at the next one)."""
        self.set_epoch(epoch)
        self.start, self.start_epoch = start, epoch

    def __iter__(self):
        # a resume skips once, in its own epoch; every later pass starts at 0
        start = self.start if self.epoch == self.start_epoch else 0
        self.start = 0
        positions = list(super().__iter__())  # this rank's share of randperm(seed + epoch)
        for pos in positions[start:]:
            index = self.dataset[pos]
            crop_seed = ((self.seed * 1_000_003 + self.epoch) * 1_000_033 + index) % 2**63
            yield index, crop_seed


class ResumableLoader(DataLoader):
    """A DataLoader whose position survives a restart. Lightning saves state_dict() in each
    checkpoint and calls load_state_dict() on resume (it looks for these two methods), so a
    resumed run goes on with the batch after the checkpoint, in the same order, instead of
    restarting the epoch in a new order. The state also carries the files found unusable."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._served = 0  # batches handed out in the current epoch pass

    def __iter__(self):
        # Counted here, in the main process, as batches are handed to the training loop: worker
        # prefetching runs ahead, but only served batches have been trained on.
        sampler = self.sampler
        resuming = isinstance(sampler, ResumableSampler) and sampler.epoch == sampler.start_epoch
        self._served = sampler.start // self.batch_size if resuming else 0
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict:
        sampler = self.sampler
        if not isinstance(sampler, ResumableSampler):  # e.g. Lightning's overfit_batches sampler
            return {}
        bad = self.dataset.bad_indices() if hasattr(self.dataset, "bad_indices") else []
        return {"seed": sampler.seed, "epoch": sampler.epoch, "batches": self._served, "bad": bad}

    def load_state_dict(self, state: dict) -> None:
        sampler = self.sampler
        if not state or not isinstance(sampler, ResumableSampler):
            return
        # The saved seed wins over this run's: the order must continue, not change mid-epoch.
        sampler.seed = state["seed"]
        sampler.resume_at(state["epoch"], state["batches"] * self.batch_size)
        self._served = state["batches"]
        if state.get("bad") and hasattr(self.dataset, "mark_bad"):
            self.dataset.mark_bad(state["bad"])
