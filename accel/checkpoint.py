"""Checkpoint I/O shared by both detectors: atomic writes, safe loads, clear errors."""
import contextlib
import errno
import os
import pickle
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from accel.errors import UserError


_REASONS = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
            errno.EACCES: "permission denied", errno.EDQUOT: "the disk quota is exceeded"}


# how torch's zip writer (PytorchStreamWriter) says that the bytes did not reach the file
_ZIP_WRITE_FAILED = re.compile(r"inline_container|PytorchStreamWriter|unexpected pos|file write failed")


def why_not_written(exc):
    """The reason of an OSError from writing, in words."""
    return _REASONS.get(exc.errno, exc.strerror or str(exc))


def make_output_dir(path):
    """Create an output folder; a read-only or full file system is one line naming it."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {path}: {why_not_written(exc)}") from None


def _write_atomic(path, write):
    """Run ``write(file)`` on a temp file beside ``path``, then rename it into place.

    A crash mid-write leaves the previous file intact instead of a truncated one; a full disk
    or a read-only folder is one UserError naming the path.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)          # mkstemp's 0600 would hide results from others
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        raise UserError(f"cannot write {path}: {why_not_written(exc)} "
                        "(the previous file, if any, is intact)") from None
    except RuntimeError as exc:           # torch.save's zip writer reports a full disk this way
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if not _ZIP_WRITE_FAILED.search(first):
            raise
        raise UserError(f"cannot write {path}: the write failed, most likely the disk is full "
                        f"({first[:120]}; the previous file, if any, is intact)") from None
    except BaseException:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_atomic(obj, path):
    """torch.save ``obj`` to ``path`` atomically (see ``_write_atomic``)."""
    _write_atomic(path, lambda f: torch.save(obj, f))


def replace_atomic(path, data):
    """Write ``data`` (bytes) to ``path`` atomically."""
    _write_atomic(path, lambda f: f.write(data))


def numpy_scalar_globals():
    """Exactly what a pickled NumPy scalar needs (upstream/Habana YOLOX checkpoints store
    ``best_ap`` as ``numpy.float64``): the scalar constructor under its NumPy 1 and NumPy 2
    module names, ``numpy.dtype`` and the dtype classes of the scalar kinds metrics use."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:                                   # NumPy 1
        from numpy.core.multiarray import scalar
    kinds = ("float64", "float32", "float16", "int64", "int32", "bool")
    return [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
            np.dtype, *{type(np.dtype(k)) for k in kinds}]


def _allowing_numpy_scalars():
    """A context in which weights-only loading also accepts ``numpy_scalar_globals()``
    (torch >= 2.5). Older torch cannot rebuild NumPy scalars weights-only at all; there such a
    checkpoint fails with a line saying so (see ``load``)."""
    ser = torch.serialization
    return ser.safe_globals(numpy_scalar_globals()) if hasattr(ser, "safe_globals") else contextlib.nullcontext()


def load(path, map_location="cpu"):
    """Load a checkpoint with ``weights_only=True`` (plus NumPy scalars, nothing else); a
    missing, corrupt or non-torch file is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist (expected a .pth file)")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise UserError(f"checkpoint {path} is not a torch checkpoint (neither torch.save's zip "
                        "format nor a pickle)")
    try:
        with _allowing_numpy_scalars():
            return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError,
            UnicodeDecodeError, OSError) as exc:
        # torch's own advice (load with weights_only=False: that would run arbitrary code) is
        # left out; what remains says what was refused
        text = str(exc)
        if "WeightsUnpickler error:" in text:
            text = text.split("WeightsUnpickler error:", 1)[1]
        lines = [ln.strip() for ln in text.splitlines()
                 if ln.strip() and "weights_only" not in ln and "Check the documentation" not in ln]
        why = lines[0] if lines else type(exc).__name__
        if "numpy" in why and not hasattr(torch.serialization, "safe_globals"):
            why += f"; torch {torch.__version__} cannot load NumPy values weights-only (torch >= 2.5 can)"
        raise UserError(f"checkpoint {path} is not a loadable torch checkpoint "
                        f"({type(exc).__name__}: {why[:200]})") from None
