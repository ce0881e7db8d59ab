"""python tools/export_torchscript.py -n yolox-s -c CKPT --output-name FILE [flags] [key value ...]

Upstream's command line for this export, kept as a thin wrapper: the code is
yolox.tools.export_torchscript (also ``python -m yolox.tools.export_torchscript`` and
``detkit-export-torchscript``, which work from an installed copy). The checkout goes first
on sys.path so this file runs the code beside it.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolox.tools.export_torchscript import main, make_parser, save_torchscript  # noqa: E402,F401

if __name__ == "__main__":
    main()
