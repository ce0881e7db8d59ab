"""Export a YOLOX model to ONNX with upstream HEAD's flags:
``python -m yolox.tools.export_onnx -n yolox-s -c yolox_s.pth --output-name yolox_s.onnx``.

As upstream, the graph emits the raw per-anchor map ``[B, A, 5+C]`` (box offsets, objectness and
class logits after sigmoid, before decoding) that its ONNXRuntime / OpenVINO / TensorRT demos
decode themselves; ``--decode_in_inference`` puts the box decoding in the graph instead, so the
output equals ``model.eval()(images)``. onnx-simplifier runs when installed, unless ``--no-onnxsim``.
The file's metadata records which of the two it holds (``detkit_output``: raw / decoded, the same
shape) and the exp's ``class_names``, for ``tools/demo.py --onnx`` (``detcore/deploy/runtime.py``).

``--nms`` exports the end-to-end graph: decoding, score = objectness x best class (one class per
anchor, as ``yolox.utils.postprocess``) and ONNX ``NonMaxSuppression`` per class (or across
classes with ``--agnostic-nms``) with ``--conf``, ``--iou`` and ``--max-det`` baked in; outputs
``num_dets [N]``, ``boxes [N, max_det, 4]`` (x1, y1, x2, y2 in pixels of the letterboxed network
input: divide by the letterbox ratio for source-image pixels), ``scores``, ``classes``
(``detcore/deploy/export_graph.py``). ``--dynamic`` makes the batch dimension dynamic (any batch at run
time), with or without ``--nms``. ``--format openvino`` also writes an OpenVINO IR (.xml + .bin,
fp32 weights) of the same graph beside the .onnx.
"""
import warnings
from pathlib import Path

import torch
from loguru import logger
from torch import nn

from accel.errors import UserError, cli_entry
from detcore.deploy.export_graph import add_nms_args, check_nms_args
from detcore.deploy.metadata import write_metadata
from yolox.core.cli import export_model
from yolox.core.options import ArgParser, add_export_args

NMS_DEFAULTS = {"conf": 0.3, "iou": 0.3, "max_det": 300}     # the demo's conf / nms; Ultralytics' max_det


def make_parser():
    parser = ArgParser("export_onnx.py", description="YOLOX ONNX export")
    parser.add_argument("--input", default="images", help="name of the ONNX input")
    parser.add_argument("--output", default="output", help="name of the ONNX output")
    parser.add_argument("-o", "--opset", type=int, default=11, help="ONNX opset (upstream's default 11)")
    parser.add_argument("--dynamic", action="store_true", help="dynamic batch dimension")
    parser.add_argument("--no-onnxsim", action="store_true", help="do not run onnx-simplifier")
    add_nms_args(parser, NMS_DEFAULTS)
    return add_export_args(parser, "yolox.onnx")


class NmsInputs(nn.Module):
    """YOLOX with a decoding head -> what ONNX ``NonMaxSuppression`` takes: boxes x1y1x2y2
    ``[N, A, 4]`` and scores ``[N, C, A]`` where an anchor scores obj x best class in its best
    class's row and 0 elsewhere (``yolox.utils.postprocess`` gives an anchor one class; the op
    would otherwise let it survive once per class); agnostic: scores ``[N, 1, A]`` + the class
    of each anchor ``[N, A]``."""

    def __init__(self, model, agnostic=False):
        super().__init__()
        self.model, self.agnostic = model, agnostic

    def forward(self, images):
        pred = self.model(images)
        centre, size = pred[..., :2], pred[..., 2:4]
        boxes = torch.cat([centre - size * 0.5, centre + size * 0.5], dim=-1)
        cls_conf, cls = pred[..., 5:].max(dim=-1)
        score = pred[..., 4] * cls_conf
        if self.agnostic:
            return boxes, score.unsqueeze(1), cls
        rows = torch.zeros_like(pred[..., 5:]).scatter(-1, cls.unsqueeze(-1), score.unsqueeze(-1))
        return boxes, rows.transpose(1, 2)


def export(model, path, input_size, batch_size=1, opset=11, input_name="images", output_name="output",
           dynamic=False):
    """Trace ``model`` (eval mode) on a zero image batch and write ``path``; ``output_name`` may
    be a tuple of names for a model with several outputs."""
    model.eval()
    dummy = torch.zeros(batch_size, 3, *input_size)
    names = [output_name] if isinstance(output_name, str) else list(output_name)
    axes = {name: {0: "batch"} for name in (input_name, *names)} if dynamic else None
    with warnings.catch_warnings():
        # Grid sizes become constants of the fixed input size; the tracer's warning about it is expected.
        # The TorchScript exporter is used on purpose: the dynamo one needs onnxscript (not a dependency).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (dummy,), str(path), input_names=[input_name], output_names=names,
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
              output_name="output", dynamic=False, onnxsim=True, class_names=None, nms=None):
    """The CLI's whole export of an eval-mode ``model`` to ``path`` (folder made, onnx-simplifier
    unless ``onnxsim`` is False, one log line); yolox.api's ``export_onnx`` calls it too.
    ``nms``: a dict (conf, iou, max_det, agnostic) for the end-to-end graph."""
    from detcore.deploy.export_graph import append_nms

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    h, w = input_size
    batch = "N" if dynamic else batch_size
    if nms is not None:
        if opset < 11:
            raise UserError(f"--nms needs --opset 11 or later (NonMaxSuppression, GatherND), got {opset}")
        model.head.decode_in_inference = True
        agnostic = bool(nms.get("agnostic"))
        outputs = ("nms_boxes", "nms_scores", "nms_labels") if agnostic else ("nms_boxes", "nms_scores")
        export(NmsInputs(model, agnostic), path, input_size, batch_size, opset, input_name, outputs, dynamic)
        if onnxsim:
            simplify(path)
        settings = append_nms(path, "nms_boxes", "nms_scores", "nms_labels" if agnostic else None,
                              max_det=nms["max_det"], iou=nms["iou"], conf=nms["conf"], agnostic=agnostic,
                              num_classes=model.head.num_classes)
        write_metadata(path, "yolox", "nms", class_names)
        logger.info(f"wrote {path} (input {input_name}: {batch}x3x{h}x{w}; end-to-end outputs num_dets, boxes "
                    f"[{batch}, {settings['max_det']}, 4] in input pixels, scores, classes; conf {settings['conf']}, "
                    f"IoU {settings['iou']}, {'class-agnostic' if agnostic else 'per-class'} NMS)")
        return Path(path)
    export(model, path, input_size, batch_size, opset, input_name, output_name, dynamic)
    if onnxsim:
        simplify(path)
    write_metadata(path, "yolox", "decoded" if model.head.decode_in_inference else "raw", class_names)
    kind = "decoded boxes" if model.head.decode_in_inference else "raw map"
    logger.info(f"wrote {path} (input {input_name}: {batch}x3x{h}x{w}, output {kind})")
    return Path(path)


@cli_entry
def main(argv=None):
    from detcore.deploy.export_graph import output_paths, save_openvino

    args = make_parser().parse_args(argv)
    check_nms_args(args)
    exp, model = export_model(args)
    nms = ({"conf": args.conf, "iou": args.iou, "max_det": args.max_det, "agnostic": args.agnostic_nms}
           if args.nms else None)
    onnx_path, xml_path = output_paths(args.output_name, args.format)
    save_onnx(model, onnx_path, exp.test_size, args.batch_size, args.opset, args.input,
              args.output, args.dynamic, onnxsim=not args.no_onnxsim,
              class_names=getattr(exp, "class_names", None), nms=nms)
    if xml_path is not None:
        logger.info(f"wrote the OpenVINO IR {save_openvino(onnx_path, xml_path)} (+ .bin)")


if __name__ == "__main__":
    main()
