"""The command line of ``tools/quantize.py`` / ``detkit-quantize`` (``detcore.deploy.quantize`` does the
work): flags, one line per bad input (exit 2), a summary of what was written."""
from pathlib import Path

from accel.errors import ArgParser, cli_entry
from detcore.deploy.quantize import BACKENDS, METHODS, default_output, quantize



def make_parser():
    p = ArgParser("quantize.py", description="Static INT8 quantisation of an exported YOLOX / SSD300 model.")
    p.add_argument("model", metavar="MODEL", help="the fp32 export (.onnx; an IR .xml with --backend openvino), "
                                                  "without --nms")
    p.add_argument("--calib-data", "--calib_data", dest="calib_data", required=True,
                   help="folder (searched recursively) or glob of training images to calibrate on")
    p.add_argument("--num-images", "--num_images", dest="num_images", type=int, default=100,
                   help="calibration images, the first N in sorted order (default 100)")
    p.add_argument("--backend", choices=BACKENDS, default="openvino",
                   help="openvino: NNCF, IR .xml + .bin (default: it kept YOLOX-nano's and SSD's AP50 within "
                        "1 point); onnxruntime: QDQ .onnx, runs wherever onnxruntime does (lost 39 AP50 "
                        "points on YOLOX-nano's depthwise convolutions, see docs/deploy.md)")
    p.add_argument("--method", choices=METHODS, default="minmax",
                   help="onnxruntime: how activation ranges are calibrated (default minmax)")
    p.add_argument("--output", "-o", default=None, help="output file (default MODEL_int8.xml / .onnx)")
    return p


@cli_entry
def main(argv=None):
    args = make_parser().parse_args(argv)
    output = args.output or default_output(args.model, args.backend)
    path, info = quantize(args.model, output, args.calib_data, args.num_images, args.backend, args.method)
    size = sum(p.stat().st_size for p in (path, path.with_suffix(".bin")) if p.is_file())
    print(f"wrote {path} ({size / 1e6:.1f} MB; {info['backend']}, {info['images']} calibration images, "
          f"{info['float_tail_nodes']} head nodes kept in float)")
    return Path(path)


if __name__ == "__main__":
    main()
