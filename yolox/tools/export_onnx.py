"""Export a YOLOX model to ONNX with upstream HEAD's flags:
``python -m yolox.tools.export_onnx -n yolox-s -c yolox_s.pth --output-name yolox_s.onnx``.

As upstream, the graph emits the raw per-anchor map ``[B, A, 5+C]`` (box offsets, objectness and
class logits after sigmoid, before decoding) that its ONNXRuntime / OpenVINO / TensorRT demos
decode themselves; ``--decode_in_inference`` puts the box decoding in the graph instead, so the
output equals ``model.eval()(images)``. onnx-simplifier runs when installed, unless ``--no-onnxsim``.
The file's metadata records which of the two it holds (``detkit_output``: raw / decoded, the same
shape) and the exp's ``class_names``, for ``tools/demo.py --onnx`` (``detcore/onnx_runtime.py``).
"""
import warnings
from pathlib import Path

import torch
from loguru import logger

from accel.errors import UserError, cli_entry
from detcore.onnx_runtime import write_metadata
from yolox.core.cli import ArgParser, add_export_args, export_model


def make_parser():
    parser = ArgParser("export_onnx.py", description="YOLOX ONNX export")
    parser.add_argument("--input", default="images", help="name of the ONNX input")
    parser.add_argument("--output", default="output", help="name of the ONNX output")
    parser.add_argument("-o", "--opset", type=int, default=11, help="ONNX opset (upstream's default 11)")
    parser.add_argument("--dynamic", action="store_true", help="dynamic batch dimension")
    parser.add_argument("--no-onnxsim", action="store_true", help="do not run onnx-simplifier")
    return add_export_args(parser, "yolox.onnx")


def export(model, path, input_size, batch_size=1, opset=11, input_name="images", output_name="output",
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


def simplify(path):
    """onnx-simplifier over ``path`` in place, as upstream; a note when it is not installed."""
    try:
        import onnx
        from onnxsim import simplify as onnxsim_simplify
    except ImportError:
        logger.info("onnx-simplifier not installed (pip install onnxsim): graph left as exported")
        return
    model, ok = onnxsim_simplify(onnx.load(str(path)))
    if not ok:
        raise UserError(f"onnx-simplifier could not validate the simplified {path}; export with --no-onnxsim")
    onnx.save(model, str(path))
    logger.info(f"simplified {path} with onnx-simplifier")


def save_onnx(model, path, input_size, batch_size=1, opset=11, input_name="images",
              output_name="output", dynamic=False, onnxsim=True, class_names=None):
    """The CLI's whole export of an eval-mode ``model`` to ``path`` (folder made, onnx-simplifier
    unless ``onnxsim`` is False, one log line); yolox.api's ``export_onnx`` calls it too."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    export(model, path, input_size, batch_size, opset, input_name, output_name, dynamic)
    if onnxsim:
        simplify(path)
    write_metadata(path, "yolox", "decoded" if model.head.decode_in_inference else "raw", class_names)
    h, w = input_size
    kind = "decoded boxes" if model.head.decode_in_inference else "raw map"
    logger.info(f"wrote {path} (input {input_name}: {batch_size}x3x{h}x{w}, output {kind})")
    return Path(path)


@cli_entry
def main(argv=None):
    args = make_parser().parse_args(argv)
    exp, model = export_model(args)
    save_onnx(model, args.output_name, exp.test_size, args.batch_size, args.opset, args.input,
              args.output, args.dynamic, onnxsim=not args.no_onnxsim,
              class_names=getattr(exp, "class_names", None))


if __name__ == "__main__":
    main()
