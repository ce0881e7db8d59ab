"""Endless, rank-sharded index stream and a batch sampler that tags indices with the mosaic flag."""
import itertools

import torch
from torch.utils.data.sampler import BatchSampler, Sampler


class InfiniteSampler(Sampler):
    """Yields indices forever: one seeded permutation per pass over the data (or 0..size-1),
    rank ``r`` of ``world_size`` taking every ``world_size``-th index starting at ``r``.

    Every rank computes the same permutations from the same seed, so the shards never overlap.
    ``start`` skips this rank's first ``start`` indices: a resumed run sets it to the number of
    samples already consumed and continues with the exact next one.
    """

    def __init__(self, size, shuffle=True, seed=0, rank=0, world_size=1, start=0):
        if size <= 0:
            raise ValueError(f"InfiniteSampler needs a non-empty data set, got size {size}")
        self._size, self._shuffle, self._seed = size, shuffle, int(seed)
        self._rank, self._world_size = rank, world_size
        self.start = start

    def __iter__(self):
        mine = itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)
        yield from itertools.islice(mine, self.start, None)

    def _infinite_indices(self):
        gen = torch.Generator()
        gen.manual_seed(self._seed)
        while True:
            order = torch.randperm(self._size, generator=gen) if self._shuffle else torch.arange(self._size)
            yield from order.tolist()

    def __len__(self):
        return self._size // self._world_size


def sample_seed(seed, rank, position):
    """32-bit augmentation seed of the ``position``-th sample of ``rank``'s stream."""
    return (int(seed) * 0x9E3779B1 + int(rank) * 0x85EBCA77 + int(position) * 0xC2B2AE3D) % 2 ** 32


class YoloBatchSampler(BatchSampler):
    """BatchSampler whose items are ``(mosaic, index, seed)``: the dataset reads the flag per
    item, so setting ``.mosaic = False`` here (the main process) switches mosaic off in every
    worker, and seeds its augmentation with ``seed`` (see ``Dataset.split_index``)."""

    def __init__(self, *args, mosaic=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.mosaic = mosaic

    def __iter__(self):
        base = getattr(self.sampler, "_seed", 0)
        rank = getattr(self.sampler, "_rank", 0)
        position = getattr(self.sampler, "start", 0)
        for batch in super().__iter__():
            items = []
            for idx in batch:
                items.append((self.mosaic, idx, sample_seed(base, rank, position)))
                position += 1
            yield items
