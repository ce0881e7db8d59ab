"""python tools/check_data.py -d DATA_DIR [--strict] [--plot [PNG]] [--classes A,B,...]

The data check's command line in a checkout, kept as a thin wrapper: the code is
detcore.check_data (also ``python -m detcore.check_data`` and ``detkit-check-data``, which work
from an installed copy). The checkout goes first on sys.path so this file runs the code beside it.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detcore.check_data import check_data, main, summary_line  # noqa: E402,F401

if __name__ == "__main__":
    main()
