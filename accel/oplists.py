"""The HPU mixed-precision op lists: which files, checked how, exported when.

Shared by device resolution (the autocast lists must be in the environment before the Habana
bridge is imported) and by Precision (HMP reads the same files), so neither imports the other.
"""
import os
import re
import sys
from pathlib import Path

from loguru import logger

from accel import hpu
from accel.errors import UserError

REPO_TOP = Path(__file__).resolve().parents[1]


def _shipped_list(name):
    """The default op list ``name``: in a checkout the repo-top file (the Habana recipe's
    ``--hmp-bf16 ops_bf16_yolox.txt``); an installed copy has no repo top, so setup.py puts the
    same file inside the installed accel package and that copy is used."""
    packaged = Path(__file__).resolve().parent / name
    return packaged if packaged.is_file() else REPO_TOP / name


DEFAULT_BF16_OPS = _shipped_list("ops_bf16_yolox.txt")
DEFAULT_FP32_OPS = _shipped_list("ops_fp32_yolox.txt")
# Read by the Habana bridge once, at import of habana_frameworks.torch.core.
AUTOCAST_ENV = {"bf16": "PT_HPU_AUTOCAST_LOWER_PRECISION_OPS_LIST",
                "fp32": "PT_HPU_AUTOCAST_FP32_OPS_LIST"}
OP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def op_list(args, kind):
    """The checked op-list file for ``kind`` ('bf16'/'fp32'): the flag if given, else the default.

    Checked here because the Habana loaders skip what they cannot parse without saying so.
    """
    flag = f"--hmp-{kind}"
    given = getattr(args, f"hmp_{kind}", None)
    path = Path(given) if given else (DEFAULT_BF16_OPS if kind == "bf16" else DEFAULT_FP32_OPS)
    if not path.is_file():
        raise UserError(f"{flag} {path} does not exist "
                        "(expected a text file, one op name per line)")
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip() and not OP_NAME.fullmatch(line.strip()):
            raise UserError(f"{flag} {path} line {number}: {line.strip()!r} is not an op name "
                            "(expected one name per line, e.g. conv2d)")
    return path


def prepare_hpu_env(args):
    """Check the op-list files and, for ``--autocast``, export them before the bridge is imported.

    Bad files fail before the (slow) Habana import. For the autocast variables an explicit flag
    wins over the environment, which wins over the repo-top defaults, so a recipe that exports
    the variables itself keeps working. The repo-top lists are YOLOX's: a CLI whose parser sets
    ``model_op_lists=False`` (SSD, whose recipe uses the bridge's own defaults) exports only the
    files given with ``--hmp-bf16/--hmp-fp32``.
    """
    if getattr(args, "hmp", False):
        for kind in AUTOCAST_ENV:
            op_list(args, kind)
    if not getattr(args, "autocast", False):
        return
    defaults = getattr(args, "model_op_lists", True)
    for kind, var in AUTOCAST_ENV.items():
        given = getattr(args, f"hmp_{kind}", None)
        if not given and not defaults:
            continue
        if given or var not in os.environ:
            path = str(op_list(args, kind).resolve())
            if os.environ.get(var) != path and hpu.CORE in sys.modules:
                logger.warning(f"{var}={path} set after the Habana bridge was imported; "
                               "it only takes effect in a new process")
            os.environ[var] = path
