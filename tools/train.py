"""python tools/train.py -n yolox-s -b 8 --data_dir DIR [flags] [key value ...]

The seed's command line for YOLOX training, kept unchanged as a thin wrapper: the code is
yolox.tools.train (also ``python -m yolox.tools.train`` and ``detkit-train``, which work from an
installed copy). The checkout goes first on sys.path so this file runs the code beside it.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolox.tools.train import check_args, main, make_parser  # noqa: E402,F401

if __name__ == "__main__":
    main()
