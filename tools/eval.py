"""python tools/eval.py -n yolox-s -c CKPT -b 8 --data_dir DIR [flags] [key value ...]

The seed's command line for YOLOX evaluation, kept unchanged as a thin wrapper: the code is
yolox.tools.eval (also ``python -m yolox.tools.eval`` and ``detkit-eval``, which work from an
installed copy). The checkout goes first on sys.path so this file runs the code beside it.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolox.tools.eval import apply_eval_flags, main, make_parser, run_eval  # noqa: E402,F401

if __name__ == "__main__":
    main()
