"""Endless, rank-sharded index stream and a batch sampler that tags indices with the mosaic flag."""
import itertools

import torch
import torch.distributed as dist
from torch.utils.data.sampler import BatchSampler, Sampler


class InfiniteSampler(Sampler):
    """Yields indices forever: one seeded permutation per pass over the data (or 0..size-1),
    rank ``r`` of ``world_size`` taking every ``world_size``-th index starting at ``r``.

    Every rank computes the same permutations from the same seed, so the shards never overlap.
    Rank and world size come from the initialised process group when there is one.
    """

    def __init__(self, size, shuffle=True, seed=0, rank=0, world_size=1):
        if size <= 0:
            raise ValueError(f"InfiniteSampler needs a non-empty data set, got size {size}")
        self._size, self._shuffle, self._seed = size, shuffle, int(seed)
        if dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        self._rank, self._world_size = rank, world_size

    def __iter__(self):
        yield from itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)

    def _infinite_indices(self):
        gen = torch.Generator()
        gen.manual_seed(self._seed)
        while True:
            order = torch.randperm(self._size, generator=gen) if self._shuffle else torch.arange(self._size)
            yield from order.tolist()

    def __len__(self):
        return self._size // self._world_size


class YoloBatchSampler(BatchSampler):
    """BatchSampler whose items are ``(mosaic, index)``: the dataset reads the flag per item, so
    setting ``.mosaic = False`` here (the main process) switches mosaic off in every worker."""

    def __init__(self, *args, mosaic=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.mosaic = mosaic

    def __iter__(self):
        for batch in super().__iter__():
            yield [(self.mosaic, idx) for idx in batch]
