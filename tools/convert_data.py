"""python tools/convert_data.py SRC --out DIR --format {coco,voc,yolo,mot} [--splits train,val] [--link {hard,sym}]

The data converter's command line in a checkout, kept as a thin wrapper: the code is
detcore.data.convert (also ``python -m detcore.data.convert`` and ``detkit-convert-data``, which work from
an installed copy). The checkout goes first on sys.path so this file runs the code beside it.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detcore.data.convert import convert, main  # noqa: E402,F401

if __name__ == "__main__":
    main()
