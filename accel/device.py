"""Device selection: the one place that imports the Habana stack, and only when HPU is asked for.

Off HPU nothing here touches ``habana_frameworks``, so CPU/CUDA runs work without it installed.
"""
import importlib
import os

import torch

from accel.distributed import dist_env
from accel.errors import UserError

DEVICES = ("cpu", "cuda", "hpu")
_HTCORE = "habana_frameworks.torch.core"
_HTHPU = "habana_frameworks.torch.hpu"
_HABANA_HINT = ("the Habana stack (habana_frameworks) is not installed; it comes from Habana's "
                "installer or a Gaudi docker image, not from requirements.txt")


def add_device_args(parser):
    """Add ``--device`` and the HPU aliases the reference recipes spell three different ways."""
    group = parser.add_argument_group("device")
    group.add_argument("--device", choices=DEVICES, default=None,
                       help="cpu (default), cuda or hpu")
    group.add_argument("--use_hpu", "--use-hpu", "--hpu", dest="use_hpu", action="store_true",
                       help="alias for --device hpu")
    group.add_argument("--hpu-lazy-mode", dest="hpu_lazy_mode", action="store_true",
                       help="HPU lazy mode (the default unless PT_HPU_LAZY_MODE=0)")
    return parser


def lazy_mode():
    """HPU lazy mode is on unless PT_HPU_LAZY_MODE=0 (resolve_device exports 1 when unset)."""
    return os.environ.get("PT_HPU_LAZY_MODE", "1").strip() != "0"


def is_hpu(device):
    return torch.device(device).type == "hpu"


def _import_habana():
    """Import the HPU bridge; a missing stack is a one-line UserError, not an ImportError trace."""
    try:
        return importlib.import_module(_HTCORE), importlib.import_module(_HTHPU)
    except ImportError as exc:
        raise UserError(f"--device hpu requested but {_HABANA_HINT} ({exc})") from None


def _wanted_device(args):
    device = getattr(args, "device", None)
    if getattr(args, "use_hpu", False):
        if device not in (None, "hpu"):
            raise UserError(f"--device {device} conflicts with --hpu/--use_hpu/--use-hpu "
                            "(pick one device)")
        device = "hpu"
    if getattr(args, "hpu_lazy_mode", False) and device != "hpu":
        raise UserError(f"--hpu-lazy-mode needs --device hpu (got --device {device or 'cpu'})")
    return device or "cpu"


def resolve_device(args):
    """Turn the parsed flags into a ``torch.device``, or a UserError saying why it can't be used.

    CUDA picks the GPU of this process's local rank; HPU sets the lazy-mode and autocast op-list
    environment before the bridge is imported, because the bridge reads them only at import.
    """
    name = _wanted_device(args)
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda requested but torch.cuda.is_available() is False")
        index = dist_env().local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if getattr(args, "hpu_lazy_mode", False) and not lazy_mode():
        raise UserError("--hpu-lazy-mode conflicts with PT_HPU_LAZY_MODE=0 in the environment")
    # Pin the bridge to lazy mode unless told otherwise, whatever its own release default is.
    os.environ.setdefault("PT_HPU_LAZY_MODE", "1")
    from accel.precision import prepare_hpu_env  # here: precision imports this module
    prepare_hpu_env(args)
    _, hthpu = _import_habana()  # importing core loads the bridge and registers "hpu"
    if not hthpu.is_available():
        raise UserError("--device hpu requested but habana_frameworks.torch.hpu.is_available() "
                        "is False (no Gaudi device visible)")
    return torch.device("hpu")


def mark_step(device):
    """Flush the lazy HPU graph (htcore.mark_step); a no-op on CPU, CUDA and eager HPU."""
    if is_hpu(device) and lazy_mode():
        importlib.import_module(_HTCORE).mark_step()


def synchronize(device):
    """Wait for queued device work (for timing); CPU work is already synchronous."""
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "hpu":
        importlib.import_module(_HTHPU).synchronize()
