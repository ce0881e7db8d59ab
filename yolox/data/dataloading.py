"""DataLoader pieces: mosaic switch-off through the batch sampler and per-worker RNG seeding."""
import random

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import default_collate

from accel.device import copy_converted
from accel.preemption import shield_worker
from detcore.data.heap import keep_freed_heap
from yolox.data.samplers import YoloBatchSampler


def _hwc_views(images):
    """The HWC arrays behind CHW uint8 views of them (TrainTransform's output), or None."""
    if not all(isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 for img in images):
        return None
    hwc = [img.transpose(1, 2, 0) for img in images]
    if len({h.shape for h in hwc}) != 1 or not all(h.flags.c_contiguous for h in hwc):
        return None
    return hwc


def collate(batch):
    """``default_collate``, except that CHW uint8 images that are views of contiguous HWC arrays
    (what TrainTransform returns) are copied as they lie into ONE [B, H, W, 3] buffer (shared
    memory in a loader worker, as default_collate's) and handed on as its [B, 3, H, W] permuted
    view: a channels_last tensor. Why: the transposing copy to CHW and back to channels_last (the
    layout the CPU/CUDA trainer runs in) are both skipped; ``.float()`` keeps the layout and the
    trainer's ``contiguous(memory_format=...)`` is then free (on HPU it makes the NCHW copy).

    The per-image info and ids after the targets come in ``default_collate``'s structure but as
    numpy arrays (``[h, w]`` each [B], ids [B, 1]), not tensors: every tensor of a worker's batch
    reaches the main process through its own shared-memory block, whose descriptor the main
    process fetches over a socket from the worker (torch's file_descriptor sharing; ~0.9 ms of
    waiting each, measured with 2 workers on 2 cores), while small arrays travel inside the
    pickled batch. Training reads only the first two."""
    hwc = _hwc_views([item[0] for item in batch]) if batch and isinstance(batch[0], (tuple, list)) else None
    if hwc is None:
        return default_collate(batch)
    shape = (len(hwc), *hwc[0].shape)
    if torch.utils.data.get_worker_info() is not None:
        elem = torch.empty(0, dtype=torch.uint8)
        out = elem.new(elem._typed_storage()._new_shared(int(np.prod(shape)))).resize_(shape)
    else:
        out = torch.empty(shape, dtype=torch.uint8)
    np.stack(hwc, out=out.numpy())
    targets = default_collate([item[1] for item in batch])
    rest = [_stack_numpy([item[k] for item in batch]) for k in range(2, len(batch[0]))]
    return [out.permute(0, 3, 1, 2), targets, *rest]


def _stack_numpy(values):
    """``default_collate``'s structure with numpy arrays for tensors: a tuple per item becomes a
    list of per-field arrays, anything else one stacked array."""
    if isinstance(values[0], (tuple, list)):
        return [_stack_numpy([v[k] for v in values]) for k in range(len(values[0]))]
    return np.asarray(values)


def as_float(images, buf=None):
    """A batch of uint8 images as float32, written into ``buf`` when it has the batch's shape,
    strides and device (else a new buffer); returns (float images, the buffer to pass next time).

    Why reuse: a fresh 39 MB float32 buffer per YOLOX-S batch is above glibc's reuse threshold,
    so every batch faulted its pages in anew: 4.7 ms per image on the 2-core CPU against 1.0 ms
    into a reused one. The trainer passes the same buffer every step (the previous step's
    backward is done by then); bench/yolox_data.py times this very function. The conversion
    itself is ``accel.device.copy_converted`` (numpy on the host, one thread)."""
    if images.dtype == torch.float32:
        return images, buf
    if (buf is None or buf.shape != images.shape or buf.stride() != images.stride()
            or buf.device != images.device):
        buf = torch.empty_like(images, dtype=torch.float32)
    return copy_converted(buf, images), buf


class DataLoader(TorchDataLoader):
    """torch DataLoader plus ``close_mosaic()`` for the last ``no_aug_epochs``; batches are made by
    ``collate`` unless a ``collate_fn`` is given."""

    def __init__(self, *args, **kwargs):
        if kwargs.get("collate_fn") is None and len(args) < 7:
            kwargs["collate_fn"] = collate
        super().__init__(*args, **kwargs)

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

    Also turns OpenCV's own thread pool off in the worker (``cv2.setNumThreads(0)``, as upstream's
    ``configure_module`` does for the trainer): the workers already run one per core, and each
    warp or colour conversion fanning out to every core again only adds contention. And keeps the
    megabyte-sized images each sample frees on the worker's heap (``detcore.data.heap.keep_freed_heap``)
    instead of unmapping and faulting them in again for the next sample.
    """
    shield_worker(worker_id)
    cv2.setNumThreads(0)
    keep_freed_heap()
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
