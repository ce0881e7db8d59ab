"""python tools/eval_track.py -d DATA (--onnx MODEL | -f EXP -c CKPT | --public-dets) --output-dir DIR

Tracking evaluation on MOTChallenge sequences: the code is yolox.tools.eval_track (also
``python -m yolox.tools.eval_track`` and ``detkit-eval-track``). The checkout goes first on
sys.path so this file runs the code beside it.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolox.tools.eval_track import main  # noqa: E402

if __name__ == "__main__":
    main()
