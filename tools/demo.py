"""python tools/demo.py {image,video,webcam} -n yolox-s -c CKPT --path IMG_DIR_OR_VIDEO [flags] [key value ...]
python tools/demo.py {image,video,webcam} --onnx MODEL.onnx --path ... (YOLOX or SSD300 export, no torch)

The seed's command line for the demo, kept unchanged as a thin wrapper: the code is
yolox.tools.demo (also ``python -m yolox.tools.demo`` and ``detkit-demo``, which work from an
installed copy). The checkout goes first on sys.path so this file runs the code beside it.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolox.tools.demo import Predictor, class_names, main, make_onnx_parser, make_parser  # noqa: E402,F401

if __name__ == "__main__":
    main()
