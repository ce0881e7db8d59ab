"""Find an experiment by model name (exps/default/<name>.py) or load one from a Python file."""
import importlib.util
import sys
from pathlib import Path

from accel.errors import UserError

DEFAULT_EXPS_DIR = Path(__file__).resolve().parents[2] / "exps" / "default"

EXP_NAMES = {
    "yolox-nano": "yolox_nano.py",
    "yolox-tiny": "yolox_tiny.py",
    "yolox-s": "yolox_s.py",
    "yolox-m": "yolox_m.py",
    "yolox-l": "yolox_l.py",
    "yolox-x": "yolox_x.py",
    "yolov3": "yolov3.py",
}


def get_exp_by_file(exp_file):
    """Import ``exp_file`` as a module and instantiate its ``Exp`` class."""
    path = Path(exp_file)
    if not path.is_file():
        raise UserError(f"exp file {path} does not exist (expected a Python file defining class Exp)")
    name = f"detkit_exp_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # lets pickle (spawned data-loader workers) find the Exp class
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise UserError(f"exp file {path} has a syntax error at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(getattr(module, "Exp", None), type):
        raise UserError(f"exp file {path} must define a class named Exp")
    return module.Exp()


def get_exp_by_name(exp_name):
    """Name -> default exp; ``yolox_s`` and ``yolox-s`` are the same name."""
    key = exp_name.strip().lower().replace("_", "-")
    if key not in EXP_NAMES:
        raise UserError(f"unknown model name {exp_name!r}; expected one of: {', '.join(EXP_NAMES)}")
    return get_exp_by_file(DEFAULT_EXPS_DIR / EXP_NAMES[key])


def get_exp(exp_file=None, exp_name=None):
    """The exp from ``-f FILE`` or ``-n NAME``; exactly one of them must be given."""
    if exp_file is not None and exp_name is not None:
        raise UserError("give either an exp file (-f) or a model name (-n), not both")
    if exp_file is not None:
        return get_exp_by_file(exp_file)
    if exp_name is not None:
        return get_exp_by_name(exp_name)
    raise UserError(f"no experiment given: pass -f EXP_FILE or -n NAME ({', '.join(EXP_NAMES)})")
