"""Device selection: flags -> ``torch.device``, with one-line errors for devices that are not there.

HPU goes through ``accel.hpu`` (the only importer of the Habana stack); off HPU nothing here
touches ``habana_frameworks``, so CPU/CUDA runs work without it installed.
"""
import os

import numpy as np
import torch
from loguru import logger

from accel import hpu
from accel.distributed import dist_env
from accel.errors import UserError
from accel.hpu import lazy_mode
from accel.oplists import prepare_hpu_env

DEVICES = ("auto", "cpu", "cuda", "hpu")


def add_device_args(parser):
    """Add ``--device`` and the HPU aliases the reference recipes spell three different ways."""
    group = parser.add_argument_group("device")
    group.add_argument("--device", choices=DEVICES, default=None,
                       help="auto (default: hpu if a Gaudi is visible, else cuda, else cpu), "
                            "cpu, cuda or hpu")
    group.add_argument("--use_hpu", "--use-hpu", "--hpu", dest="use_hpu", action="store_true",
                       help="alias for --device hpu")
    group.add_argument("--hpu-lazy-mode", dest="hpu_lazy_mode", action="store_true",
                       help="HPU lazy mode (the default unless PT_HPU_LAZY_MODE=0)")
    return parser


def _wanted_device(args, dynamic_shapes=None):
    """(device name, chosen by auto?). When auto picks the HPU it has already opened it."""
    device = getattr(args, "device", None)
    if getattr(args, "use_hpu", False):
        if device not in (None, "auto", "hpu"):
            raise UserError(f"--device {device} conflicts with --hpu/--use_hpu/--use-hpu "
                            "(pick one device)")
        device = "hpu"
    device = device or "auto"
    if getattr(args, "hpu_lazy_mode", False) and device not in ("hpu", "auto"):
        raise UserError(f"--hpu-lazy-mode needs --device hpu (got --device {device})")
    if device != "auto":
        return device, False
    device = _auto_device(args, dynamic_shapes)
    if getattr(args, "hpu_lazy_mode", False) and device != "hpu":
        raise UserError(f"--hpu-lazy-mode needs --device hpu (no Gaudi found; auto chose {device})")
    return device, True


def _auto_device(args, dynamic_shapes=None):
    """HPU when the Habana stack is installed and a card is visible, else CUDA, else CPU."""
    if hpu.stack_installed():
        try:
            _open_hpu(args, dynamic_shapes)
            return "hpu"
        except UserError as exc:
            logger.info(f"--device auto: not using the HPU ({exc})")
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def _open_hpu(args, dynamic_shapes=None):
    if getattr(args, "hpu_lazy_mode", False) and not lazy_mode():
        raise UserError("--hpu-lazy-mode conflicts with PT_HPU_LAZY_MODE=0 in the environment")
    # Pin the bridge to lazy mode unless told otherwise, whatever its own release default is.
    os.environ.setdefault("PT_HPU_LAZY_MODE", "1")
    prepare_hpu_env(args)
    if dynamic_shapes is not None:
        hpu.set_dynamic_shapes_env(dynamic_shapes)
    if not hpu.is_available():
        raise UserError("--device hpu requested but habana_frameworks.torch.hpu.is_available() "
                        "is False (no Gaudi device visible)")
    if dynamic_shapes:
        hpu.enable_dynamic_shape()


def resolve_device(args, dynamic_shapes=None):
    """Turn the parsed flags into a ``torch.device``, or a UserError saying why it can't be used.

    CUDA picks the GPU of this process's local rank; HPU sets the lazy-mode and autocast op-list
    environment before the bridge is imported, because the bridge reads them only at import.
    The chosen device is logged, so a run with ``--device auto`` says what it got.
    ``dynamic_shapes`` (HPU only): True switches Habana's dynamic-shape support on as the SSD
    recipe does (environment before the bridge import, then the runtime call), False off as the
    YOLOX recipe does, None leaves Habana's default.
    """
    name, auto = _wanted_device(args, dynamic_shapes)
    if name == "cpu":
        device = torch.device("cpu")
    elif name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda requested but torch.cuda.is_available() is False")
        index = dist_env().local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        device = torch.device("cuda", index)
    else:
        if not auto:                      # auto has opened the HPU already to find it
            _open_hpu(args, dynamic_shapes)
        device = torch.device("hpu")
    logger.info(f"device: {device}" + (" (chosen by --device auto)" if auto else ""))
    return device


def copy_converted(dst, src):
    """``dst.copy_(src)`` across dtypes (uint8 images -> float32), returning ``dst``.

    Host tensors are converted by numpy: one thread, vectorised, no OpenMP team. torch's copy
    wakes every intra-op thread, and while loader workers hold the other cores those threads
    spin-wait on each other: on the 2-core Intel Xeon (2026-12-06) with 2 loader workers and
    ``--cache ram``, the main process spent 2.29-2.38 ms of CPU per 640x640 image receiving,
    converting and reading a batch this way against 2.50-2.54 ms with torch's copy (torch's
    default 2 threads). Device tensors convert on their device."""
    if (dst.device.type == "cpu" and src.device.type == "cpu" and src.dtype == torch.uint8
            and dst.dtype == torch.float32):
        np.copyto(dst.numpy(), src.numpy(), casting="unsafe")
        return dst
    return dst.copy_(src)


def synchronize(device):
    """Wait for queued device work (for timing); CPU work is already synchronous."""
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "hpu":
        hpu.synchronize()
