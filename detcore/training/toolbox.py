"""The training toolbox both trainers use, so seeding, RNG state, learning rate and the run lock
behave the same in YOLOX and SSD."""
import atexit
import os
import random
from pathlib import Path

import numpy as np
import torch
from loguru import logger

from accel import broadcast_object
from detcore.files import make_output_dir, why_not_written
from accel.errors import UserError


def draw_seed(seed=None):
    """``seed`` if given, else one drawn from the OS; the main process's value on every rank,
    so a run without ``--seed`` is still reproducible from the seed its checkpoint records."""
    if seed is None:
        seed = random.SystemRandom().randrange(2 ** 31)
    return int(broadcast_object(seed, src=0))


def seed_everything(seed, deterministic=False):
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def rng_state():
    """Python, NumPy and torch (CPU) generator states: what the next iteration's draws need.

    Held as tensors and plain tuples so that a weights-only load can read them back.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                      float(gauss))}


def set_rng_state(state):
    if not state:
        return
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


class RunLock:
    """One live run per output folder: ``.run.lock`` holds the owner's PID (host-local).

    A second live run stops with one line naming the PID; the lock of a run that died (killed,
    crashed) is taken over with a warning. Only the main process takes it.
    """

    NAME = ".run.lock"

    def __init__(self, folder, enabled=True):
        self.path = Path(folder) / self.NAME
        self.held = False
        if enabled:
            self._take()

    def _take(self):
        make_output_dir(self.path.parent)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and owner != os.getpid() and _alive(owner):
                    raise UserError(f"output folder {self.path.parent} is in use by a live run "
                                    f"(PID {owner}); wait for it, stop it, or pick another output "
                                    "dir") from None
                logger.warning(f"taking over the lock of a run that is gone (PID {owner}) in "
                               f"{self.path.parent}")
                self.path.unlink(missing_ok=True)
                continue
            except OSError as exc:
                raise UserError(f"cannot write in the output folder {self.path.parent}: "
                                f"{why_not_written(exc)}") from None
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.held = True
            atexit.register(self.release)
            return
        raise UserError(f"cannot take the run lock {self.path} (another run keeps re-creating it)")

    def _owner(self):
        try:
            return int(self.path.read_text().strip() or -1)
        except (OSError, ValueError):
            return None

    def release(self):
        if self.held and self._owner() == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
