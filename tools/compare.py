"""python tools/compare.py RUN_A RUN_B [...] --data DIR

Compares detection runs with paired-bootstrap confidence intervals: the code is
detcore.evaluation.compare_cli (also ``python -m detcore.evaluation.compare_cli`` and
``detkit-compare``). The checkout goes first on sys.path so this file runs the code beside it.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detcore.evaluation.compare_cli import main  # noqa: E402

if __name__ == "__main__":
    main()
