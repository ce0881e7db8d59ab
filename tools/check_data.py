"""python tools/check_data.py -d DATA_DIR [--strict] [--plot [PNG]] [--classes A,B,...]

The data check's command line in a checkout, kept as a thin wrapper: the code is
detcore.data.check (also ``python -m detcore.data.check`` and ``detkit-check-data``, which work
from an installed copy). The checkout goes first on sys.path so this file runs the code beside it.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detcore.data.check import check_data, main, summary_line  # noqa: E402,F401

if __name__ == "__main__":
    main()
