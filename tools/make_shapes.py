"""python tools/make_shapes.py --out DIR --num-train N --num-val M --seed S [--format {coco,voc,yolo}]
    [--classes ...] [--background N] [--video N [--frames F]]

The synthetic shapes generator's command line in a checkout, kept as a thin wrapper: the code is
detcore.data.shapes (also ``python -m detcore.data.shapes`` and ``detkit-make-shapes``, which work
from an installed copy). The checkout goes first on sys.path so this file runs the code beside it.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detcore.data.shapes import CATEGORIES, main, make_shapes, parse_classes, render_image  # noqa: E402,F401

if __name__ == "__main__":
    main()
