"""The one module that imports Habana's PyTorch stack (``habana_frameworks``), always lazily.

Everything HPU-specific that the project uses goes through a function here: the bridge (lazy
mode, ``mark_step``), device queries, Habana mixed precision, the hccl backend and Habana's data
loader. Nothing is imported until a run asks for the HPU, so CPU/CUDA runs work without the
stack, and the tests swap in a recording fake of these modules through the import system.
"""
import importlib
import importlib.util
import os

import torch

from accel.errors import UserError

CORE = "habana_frameworks.torch.core"
HPU = "habana_frameworks.torch.hpu"
HMP = "habana_frameworks.torch.hpex.hmp"
HCCL = "habana_frameworks.torch.distributed.hccl"
OPTIMIZERS = "habana_frameworks.torch.hpex.optimizers"
MOVING_AVERAGE = "habana_frameworks.torch.hpex.movingavrg"
DYNAMIC_SHAPES_ENV = "PT_HPU_ENABLE_REFINE_DYNAMIC_SHAPES"
DATALOADER = "habana_dataloader"
MISSING_HINT = ("the Habana stack (habana_frameworks) is not installed; it comes from Habana's "
                "installer or a Gaudi docker image, not from requirements.txt")


def is_hpu(device):
    return torch.device(device).type == "hpu"


def lazy_mode():
    """HPU lazy mode is on unless PT_HPU_LAZY_MODE=0 (resolve_device exports 1 when unset)."""
    return os.environ.get("PT_HPU_LAZY_MODE", "1").strip() != "0"


def stack_installed():
    """Whether the Habana stack is importable at all (looked up, not imported)."""
    try:
        return importlib.util.find_spec("habana_frameworks") is not None
    except (ImportError, ValueError):
        return False


def _module(name):
    return importlib.import_module(name)


def import_bridge():
    """Load the bridge (registers the "hpu" device); a missing stack is a one-line UserError.

    The bridge reads PT_HPU_* variables only now, so callers export them before calling this.
    """
    try:
        _module(CORE)
        return _module(HPU)
    except ImportError as exc:
        raise UserError(f"--device hpu requested but {MISSING_HINT} ({exc})") from None


def is_available():
    return import_bridge().is_available()


def mark_step(device):
    """Flush the lazy HPU graph (htcore.mark_step); a no-op on CPU, CUDA and eager HPU."""
    if is_hpu(device) and lazy_mode():
        _module(CORE).mark_step()


def synchronize():
    _module(HPU).synchronize()


def hmp():
    """Habana mixed precision (``hmp.convert`` / ``hmp.disable_casts``)."""
    return _module(HMP)


def register_hccl():
    """Importing Habana's hccl module registers the "hccl" torch.distributed backend."""
    _module(HCCL)


def fused_sgd_class():
    """Habana's fused SGD (same constructor and state dict as torch.optim.SGD)."""
    return _module(OPTIMIZERS).FusedSGD


def fused_ema_class():
    """Habana's fused EMA of model weights (``FusedEMA(model, decay)``, ``.update(model)``,
    ``.ema``, ``.updates``), as Habana's YOLOX uses on HPU."""
    return _module(MOVING_AVERAGE).FusedEMA


def set_dynamic_shapes_env(enabled):
    """Habana's refine-dynamic-shapes switch; the bridge reads it at import, so call this first.
    An explicit setting in the environment wins."""
    os.environ.setdefault(DYNAMIC_SHAPES_ENV, "1" if enabled else "0")


def enable_dynamic_shape():
    """The runtime half of the switch (SSD 1.14+ recipe), after the bridge is imported."""
    _module(HPU).enable_dynamic_shape()


def dataloader_class():
    """Habana's drop-in DataLoader, or None when the package is not importable."""
    try:
        return _module(DATALOADER).HabanaDataLoader
    except ImportError:
        return None
