"""Helpers for the YOLOX trainer/CLI tests: import tools/*.py (not a package) and tiny settings."""
import importlib.util
import sys
from pathlib import Path

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
