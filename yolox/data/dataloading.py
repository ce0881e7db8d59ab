"""DataLoader pieces: mosaic switch-off through the batch sampler and per-worker RNG seeding."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader as TorchDataLoader

from accel.preemption import shield_worker
from yolox.data.samplers import YoloBatchSampler


class DataLoader(TorchDataLoader):
    """torch DataLoader plus ``close_mosaic()`` for the last ``no_aug_epochs``."""

    def close_mosaic(self):
        """Stop mosaic/MixUp: through the batch sampler (reaches workers) and on the dataset itself."""
        if isinstance(self.batch_sampler, YoloBatchSampler):
            self.batch_sampler.mosaic = False
        if hasattr(self.dataset, "close_mosaic"):
            self.dataset.close_mosaic()


def worker_init_reset_seed(worker_id):
    """Seed Python's and numpy's RNGs (used by the augmentations) from torch's per-worker seed.

    Forked workers would otherwise share the parent's ``random``/``np.random`` state and produce
    identical augmentations; torch's worker seed differs per worker and follows the trainer's seed.
    """
    shield_worker(worker_id)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
