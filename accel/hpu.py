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


def dataloader_class():
    """Habana's drop-in DataLoader, or None when the package is not importable."""
    try:
        return _module(DATALOADER).HabanaDataLoader
    except ImportError:
        return None
