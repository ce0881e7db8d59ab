"""python tools/quantize.py MODEL.onnx --calib-data datasets/shapes/train2017 [--num-images 100]
[--backend onnxruntime|openvino] [--output MODEL_int8.onnx]

Static INT8 quantisation of an exported YOLOX or SSD300 (``detcore/deploy/quantize.py``): onnxruntime's
QDQ quantisation (default, writes an .onnx) or NNCF for OpenVINO (writes an IR .xml + .bin),
calibrated on the first N training images through the runtime's own preprocessing. The result
runs wherever the fp32 file does (``tools/demo.py --onnx``, ``detcore.deploy.runtime.Detector``).
Also ``python -m detcore.deploy.quantize_cli`` and the ``detkit-quantize`` console script.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detcore.deploy.quantize_cli import main, make_parser  # noqa: E402,F401

if __name__ == "__main__":
    main()
