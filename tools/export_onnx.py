"""Export a YOLOX model to ONNX: ``python tools/export_onnx.py -n yolox-s -c ckpt.pth --output-name out.onnx``.

The graph contains box decoding (``head.decode_in_inference``) so its output equals
``model.eval()(images)`` unless ``--no-decode`` asks for the raw per-anchor map.
"""
import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from loguru import logger  # noqa: E402

from accel.errors import UserError, cli_entry  # noqa: E402
from yolox.exp import get_exp  # noqa: E402
from yolox.utils import load_ckpt  # noqa: E402


def make_parser():
    parser = argparse.ArgumentParser("YOLOX ONNX export")
    parser.add_argument("-n", "--name", default=None, help="model name, e.g. yolox-s")
    parser.add_argument("-f", "--exp_file", "--exp-file", dest="exp_file", default=None, help="experiment file")
    parser.add_argument("-c", "--ckpt", default=None, help="checkpoint .pth (random weights when omitted)")
    parser.add_argument("--output-name", "--output_name", dest="output_name", default="yolox.onnx")
    parser.add_argument("--input", default="images", help="name of the ONNX input")
    parser.add_argument("--output", default="output", help="name of the ONNX output")
    parser.add_argument("-o", "--opset", type=int, default=17)
    parser.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=1)
    parser.add_argument("--dynamic", action="store_true", help="dynamic batch dimension")
    parser.add_argument("--no-decode", dest="decode", action="store_false",
                        help="emit the raw head map instead of decoded boxes")
    parser.add_argument("--no-onnxsim", action="store_true",
                        help="accepted so upstream command lines work; onnx-simplifier is never run")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="exp overrides: key value ...")
    return parser


def export(model, path, input_size, batch_size=1, opset=17, input_name="images", output_name="output",
           dynamic=False):
    """Trace ``model`` (eval mode) on a zero image batch and write ``path``."""
    model.eval()
    dummy = torch.zeros(batch_size, 3, *input_size)
    axes = {input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        # Grid sizes become constants of the fixed input size; the tracer's warning about it is expected.
        # The TorchScript exporter is used on purpose: the dynamo one needs onnxscript (not a dependency).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (dummy,), str(path), input_names=[input_name], output_names=[output_name],
                          opset_version=opset, dynamic_axes=axes, dynamo=False)


@cli_entry
def main(argv=None):
    args = make_parser().parse_args(argv)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    exp = get_exp(args.exp_file, args.name)
    exp.merge(args.opts)
    model = exp.get_model()
    if args.ckpt is not None:
        load_ckpt(model, args.ckpt)
        logger.info(f"loaded checkpoint {args.ckpt}")
    else:
        logger.warning("no checkpoint given (-c): exporting randomly initialised weights")
    model.head.decode_in_inference = args.decode
    Path(args.output_name).parent.mkdir(parents=True, exist_ok=True)
    export(model, args.output_name, exp.test_size, args.batch_size, args.opset, args.input, args.output, args.dynamic)
    h, w = exp.test_size
    logger.info(f"wrote {args.output_name} (input {args.input}: {args.batch_size}x3x{h}x{w})")


if __name__ == "__main__":
    main()
