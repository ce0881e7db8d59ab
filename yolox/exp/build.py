"""Find an experiment by model name (``-n yolox-s``) or load one from a Python file (``-f FILE``).

The shipped exp files have one home, the checkout's ``exps/`` folder; setup.py installs that
folder as ``yolox/exp/default`` and ``yolox/exp/example``, so ``-n`` finds the same files in a
checkout (editable install or sys.path) and in a non-editable ``pip install .``.
"""
import importlib.util
import sys
from pathlib import Path

from accel.errors import UserError

_PACKAGED = Path(__file__).resolve().parent            # yolox/exp: default/ and example/ when installed
_CHECKOUT = Path(__file__).resolve().parents[2] / "exps"


def exps_dir():
    """The folder holding default/ and example/: the installed copy when there is one, else the
    checkout's exps/ (an editable install leaves yolox/exp/ without them)."""
    return _PACKAGED if (_PACKAGED / "default").is_dir() else _CHECKOUT


# -n NAME -> the file under exps_dir(): upstream's default models, then the example recipes (the
# shapes quick start and upstream's VOC / custom-data templates), which an installed copy cannot
# reach with -f exps/example/... because it has no exps/ folder beside the caller.
EXP_NAMES = {
    "yolox-nano": "default/yolox_nano.py",
    "yolox-tiny": "default/yolox_tiny.py",
    "yolox-s": "default/yolox_s.py",
    "yolox-m": "default/yolox_m.py",
    "yolox-l": "default/yolox_l.py",
    "yolox-x": "default/yolox_x.py",
    "yolov3": "default/yolov3.py",
    "yolox-nano-shapes": "example/shapes/yolox_nano_shapes.py",
    "yolox-nano-voc-shapes": "example/shapes/yolox_nano_voc_shapes.py",
    "yolox-voc-s": "example/yolox_voc/yolox_voc_s.py",
    "yolox-s-custom": "example/custom/yolox_s.py",
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
    """Name -> shipped exp (EXP_NAMES); ``yolox_s`` and ``yolox-s`` are the same name."""
    key = exp_name.strip().lower().replace("_", "-")
    if key not in EXP_NAMES:
        raise UserError(f"unknown model name {exp_name!r}; expected one of: {', '.join(EXP_NAMES)}")
    return get_exp_by_file(exps_dir() / EXP_NAMES[key])


def get_exp(exp_file=None, exp_name=None):
    """The exp from ``-f FILE`` or ``-n NAME``; exactly one of them must be given."""
    if exp_file is not None and exp_name is not None:
        raise UserError("give either an exp file (-f) or a model name (-n), not both")
    if exp_file is not None:
        return get_exp_by_file(exp_file)
    if exp_name is not None:
        return get_exp_by_name(exp_name)
    raise UserError(f"no experiment given: pass -f EXP_FILE or -n NAME ({', '.join(EXP_NAMES)})")
