"""Checkpoint I/O shared by both detectors: atomic writes, safe loads, clear errors."""
import os
import pickle
import tempfile
from pathlib import Path

import torch

from accel.errors import UserError


def save_atomic(obj, path):
    """Write ``obj`` with torch.save to a temp file beside ``path`` then rename it into place.

    A crash mid-write leaves the previous checkpoint intact instead of a truncated file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path, map_location="cpu"):
    """Load a checkpoint with ``weights_only=True``; a missing or corrupt file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist (expected a .pth file)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"checkpoint {path} could not be loaded as a weights-only torch file: {first}")
