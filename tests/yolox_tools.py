"""Helpers for the YOLOX tests: import tools/*.py (not a package), tiny settings, an ATen call recorder."""
import importlib.util
import sys
from collections import Counter
from pathlib import Path

from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
SHAPES_EXP = str(ROOT / "exps" / "example" / "shapes" / "yolox_nano_shapes.py")
# yolox-nano at 160 px, no workers, no multi-scale: a training step takes well under a second
TINY = ["input_size", "160,160", "test_size", "160,160", "data_num_workers", "0",
        "print_interval", "1", "warmup_epochs", "1", "multiscale_range", "0"]


def load_tool(name):
    """tools/<name>.py as a module (cached), so tests call its ``main(argv)`` in-process."""
    key = f"detkit_tool_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


class RecordOps(TorchDispatchMode):
    """Every ATen call made inside the ``with`` block, backward included: ``calls`` holds
    (op, args) with op named as "aten.<name>"; ``counts()`` tallies the ops."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((str(func.overloadpacket), args))
        return func(*args, **(kwargs or {}))

    def counts(self):
        return Counter(op for op, _ in self.calls)

    def args_of(self, *ops):
        """The argument tuples of every call to one of ``ops``."""
        return [args for op, args in self.calls if op in ops]
