"""Base dataset: a fixed input size plus the ``(mosaic_flag, index, seed)`` keys that
YoloBatchSampler sends."""
import random

import numpy as np
from torch.utils.data import Dataset as TorchDataset


class Dataset(TorchDataset):
    """Torch dataset with an ``input_dim`` (h, w) and an ``enable_mosaic`` switch."""

    def __init__(self, input_dimension, mosaic=True):
        super().__init__()
        self._input_dim = tuple(input_dimension[:2])
        self.enable_mosaic = mosaic

    @property
    def input_dim(self):
        """Network input size (h, w); the trainer does multi-scale by resizing whole batches."""
        return self._input_dim

    def split_index(self, index):
        """Accept a plain index, ``(mosaic, index)`` or YoloBatchSampler's ``(mosaic, index, seed)`` -> (mosaic on?, index).

        The flag travels with the index because the sampler lives in the main process, so a
        ``close_mosaic`` there reaches persistent workers that hold their own dataset copies.
        The seed re-seeds Python's and NumPy's generators (which the augmentations draw from)
        for this one sample: a sample's augmentation then depends only on the run's seed and
        its place in the sample stream, not on which worker made it or on a resume in between.
        """
        if isinstance(index, tuple):
            mosaic, index, *seed = index
            if seed:
                random.seed(seed[0])
                np.random.seed(seed[0])
            return self.enable_mosaic and mosaic, index
        return self.enable_mosaic, index
