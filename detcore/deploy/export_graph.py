"""Export-side graph work shared by both exporters (needs the ``onnx`` package, which an export
has anyway): appending NMS to an exported graph (``--nms``) and writing an OpenVINO IR
(``--format openvino``).

End-to-end graphs. The exporters trace a small wrapper that ends in two tensors the ONNX
``NonMaxSuppression`` op takes as they are: ``boxes [N, A, 4]`` (x1, y1, x2, y2 in pixels of the
network input) and ``scores [N, C, A]`` (one row per class; zero where an anchor is not a
candidate of that class); an agnostic export passes ``scores [N, 1, A]`` and ``labels [N, A]``.
``append_nms`` then adds, in plain ONNX ops that onnxruntime and OpenVINO both run:

    NonMaxSuppression (per class, at most max_det per class, IoU and score thresholds as
    constant inputs) -> selected (image, class, anchor) triples -> their scores and boxes ->
    per image the max_det best (TopK over a dense [N, K] score table, -1 where a triple belongs
    to another image) -> zero-padded to max_det

and the graph's outputs become ``num_dets [N]`` (int64), ``boxes [N, max_det, 4]`` (float,
input-image pixels), ``scores [N, max_det]`` (float, best first) and ``classes [N, max_det]``
(int64). Rows past ``num_dets`` are zeros. No per-image or per-box loop: the batch goes through
the op as one tensor, so a dynamic batch stays dynamic. The top-K runs over K+1 columns (a
sentinel column of -1) so that an image batch with no detection at all still has a K >= 1 to
take from: TopK with k=0 is not something every runtime accepts.

Why these NMS semantics match the PyTorch paths: ``NonMaxSuppression`` drops a box whose IoU with
a kept box of its class is above the threshold and keeps scores above ``score_threshold``
(torchvision's ``batched_nms`` and SSD's ``score > conf``); keeping at most max_det per class and
then the max_det best overall is the same as keeping the max_det best survivors of all classes.
"""
import json
from pathlib import Path

import numpy as np

from detcore.deploy.metadata import META_NMS


def add_nms_args(parser, defaults):
    """The end-to-end and format flags both exporters share; ``defaults``: conf, iou, max_det."""
    parser.add_argument("--nms", action="store_true",
                        help="end-to-end graph: decoding + ONNX NonMaxSuppression; outputs num_dets, boxes "
                             "(input-image pixels), scores, classes")
    parser.add_argument("--conf", type=float, default=defaults["conf"],
                        help=f"--nms: score threshold baked into the graph (default {defaults['conf']})")
    parser.add_argument("--iou", type=float, default=defaults["iou"],
                        help=f"--nms: NMS IoU threshold baked into the graph (default {defaults['iou']})")
    parser.add_argument("--max-det", "--max_det", dest="max_det", type=int, default=defaults["max_det"],
                        help=f"--nms: detections kept per image (default {defaults['max_det']})")
    parser.add_argument("--agnostic-nms", "--agnostic_nms", dest="agnostic_nms", action="store_true",
                        help="--nms: one NMS across classes instead of one per class")
    parser.add_argument("--format", choices=("onnx", "openvino"), default="onnx",
                        help="openvino: also write an OpenVINO IR (.xml + .bin) of the graph")
    return parser


def check_nms_args(args):
    """One line for thresholds the NMS op would take without complaint but that mean nothing."""
    from accel.errors import UserError

    if not 0 <= args.conf < 1:
        raise UserError(f"--conf must be in [0, 1) (got {args.conf})")
    if not 0 < args.iou <= 1:
        raise UserError(f"--iou must be in (0, 1] (got {args.iou})")
    if args.max_det < 1:
        raise UserError(f"--max-det must be >= 1 (got {args.max_det})")
    if not args.nms and args.agnostic_nms:
        raise UserError("--agnostic-nms applies to an --nms export only")
    if args.nms and getattr(args, "decode", False):
        raise UserError("--decode and --nms exclude each other (--nms decodes in the graph too)")


def _opset(model):
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 11)


class _Builder:
    """Appends nodes with unique names; hides the ops whose signature changed at opset 13."""

    def __init__(self, graph, opset, prefix="nms"):
        from onnx import helper, numpy_helper

        self.graph, self.opset, self.prefix, self.count = graph, opset, prefix, 0
        self.helper, self.numpy_helper = helper, numpy_helper

    def name(self, what):
        self.count += 1
        return f"{self.prefix}/{what}_{self.count}"

    def const(self, value, what="const"):
        name = self.name(what)
        self.graph.initializer.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type, inputs, outputs=1, **attrs):
        names = [self.name(op_type.lower()) for _ in range(outputs)]
        self.graph.node.append(self.helper.make_node(op_type, list(inputs), names, name=self.name(op_type), **attrs))
        return names[0] if outputs == 1 else names

    def unsqueeze(self, x, axes):
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.const(np.array(axes, dtype=np.int64), "axes")])
        return self.op("Unsqueeze", [x], axes=list(axes))

    def reduce_sum(self, x, axis):
        if self.opset >= 13:
            return self.op("ReduceSum", [x, self.const(np.array([axis], dtype=np.int64), "axes")], keepdims=0)
        return self.op("ReduceSum", [x], axes=[axis], keepdims=0)

    def column(self, x, k):
        """``x[:, k]`` of a 2-D int64 tensor, as a 1-D tensor."""
        return self.op("Gather", [x, self.const(np.array(k, dtype=np.int64), "col")], axis=1)


def append_nms(path, boxes, scores, labels=None, max_det=300, iou=0.45, conf=0.25, agnostic=False,
               box_scale=None, class_offset=0, num_classes=None):
    """Rewrite the ``.onnx`` at ``path`` (outputs ``boxes``, ``scores`` and, for an agnostic
    export, ``labels``, as described above) into the end-to-end graph with outputs
    ``NMS_OUTPUTS``; records the thresholds in its metadata (``META_NMS``). ``box_scale``
    multiplies the boxes before they leave the graph (SSD: [0, 1] units -> input pixels; NMS
    itself is scale-free); ``class_offset`` is added to a per-class graph's class row index (SSD:
    row 0 is label 1, background has no row); ``num_classes`` (YOLOX classes, SSD labels with
    the background) goes into the metadata for the runtime, which cannot read it off the outputs."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    graph = model.graph
    b = _Builder(graph, _opset(model))
    i64, f32 = np.int64, np.float32

    sel = b.op("NonMaxSuppression", [boxes, scores, b.const(np.array([max_det], dtype=i64), "max_per_class"),
                                     b.const(np.array([iou], dtype=f32), "iou_threshold"),
                                     b.const(np.array([conf], dtype=f32), "score_threshold")],
               center_point_box=0)                                               # [K, 3] (image, class, anchor)
    image, cls, anchor = b.column(sel, 0), b.column(sel, 1), b.column(sel, 2)    # [K]
    sel_scores = b.op("GatherND", [scores, sel])                                 # [K]
    image_anchor = b.op("Concat", [b.unsqueeze(image, [1]), b.unsqueeze(anchor, [1])], axis=1)
    sel_boxes = b.op("GatherND", [boxes, image_anchor])                          # [K, 4]
    if labels is not None:                                                       # agnostic: the anchor's class
        cls = b.op("Cast", [b.op("GatherND", [labels, image_anchor])], to=TensorProto.INT64)
    elif class_offset:
        cls = b.op("Add", [cls, b.const(np.array(class_offset, dtype=i64), "class_offset")])
    if box_scale is not None:
        sel_boxes = b.op("Mul", [sel_boxes, b.const(np.array(box_scale, dtype=f32), "box_scale")])

    # a sentinel column so that K + 1 >= 1 (see the module docstring)
    sel_boxes = b.op("Concat", [sel_boxes, b.const(np.zeros((1, 4), dtype=f32), "pad_box")], axis=0)
    cls = b.op("Concat", [cls, b.const(np.zeros(1, dtype=i64), "pad_cls")], axis=0)
    sel_scores = b.op("Concat", [sel_scores, b.const(np.full(1, -1.0, dtype=f32), "pad_score")], axis=0)
    image = b.op("Concat", [image, b.const(np.full(1, -1, dtype=i64), "pad_image")], axis=0)

    # dense [N, K+1]: a triple's score in its image's row, -1 elsewhere
    batch = b.op("Gather", [b.op("Shape", [boxes]), b.const(np.array(0, dtype=i64), "zero")], axis=0)
    rows = b.op("Range", [b.const(np.array(0, dtype=i64), "start"), batch, b.const(np.array(1, dtype=i64), "step")])
    mine = b.op("Equal", [b.unsqueeze(rows, [1]), b.unsqueeze(image, [0])])
    table = b.op("Where", [mine, b.unsqueeze(sel_scores, [0]), b.const(np.array(-1.0, dtype=f32), "minus_one")])
    # k = min(K + 1, max_det); Min takes int64 from opset 12 only, so through float (exact below 2^24)
    k = b.op("Cast", [b.op("Min", [b.op("Cast", [b.op("Shape", [sel_scores])], to=TensorProto.FLOAT),
                                   b.const(np.array([max_det], dtype=f32), "max_det_f")])], to=TensorProto.INT64)
    top, idx = b.op("TopK", [table, k], outputs=2, axis=1, largest=1, sorted=1)  # [N, k]
    valid = b.op("Greater", [top, b.const(np.array(-0.5, dtype=f32), "half")])
    num = b.reduce_sum(b.op("Cast", [valid], to=TensorProto.INT64), axis=1)
    zero_f = b.const(np.array(0.0, dtype=f32), "zero_f")
    out_scores = b.op("Where", [valid, top, zero_f])
    out_classes = b.op("Where", [valid, b.op("Gather", [cls, idx], axis=0), b.const(np.array(0, dtype=i64), "zero_i")])
    out_boxes = b.op("Where", [b.unsqueeze(valid, [2]), b.op("Gather", [sel_boxes, idx], axis=0), zero_f])

    # zero-pad the k columns to max_det
    missing = b.op("Sub", [b.const(np.array([max_det], dtype=i64), "max_det"), k])
    z1 = b.const(np.zeros(1, dtype=i64), "z")
    pads2 = b.op("Concat", [z1, z1, z1, missing], axis=0)
    pads3 = b.op("Concat", [z1, z1, z1, z1, missing, z1], axis=0)
    final = {
        "num_dets": num,
        "boxes": b.op("Pad", [out_boxes, pads3], mode="constant"),
        "scores": b.op("Pad", [out_scores, pads2], mode="constant"),
        "classes": b.op("Pad", [out_classes, pads2], mode="constant"),
    }
    for name, tensor in final.items():
        graph.node.append(helper.make_node("Identity", [tensor], [name], name=f"nms/out_{name}"))
    batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
    n = batch_dim.dim_param or batch_dim.dim_value or "batch"
    del graph.output[:]
    graph.output.extend([
        helper.make_tensor_value_info("num_dets", TensorProto.INT64, [n]),
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [n, max_det, 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, [n, max_det]),
        helper.make_tensor_value_info("classes", TensorProto.INT64, [n, max_det]),
    ])
    settings = {"conf": float(conf), "iou": float(iou), "max_det": int(max_det), "agnostic": bool(agnostic),
                "num_classes": int(num_classes)}
    model.metadata_props.add(key=META_NMS, value=json.dumps(settings))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return settings


def onnx_metadata(path):
    """The string metadata of an ``.onnx`` (``metadata_props``) as a dict."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def save_openvino(onnx_path, xml_path):
    """Convert the ``.onnx`` at ``onnx_path`` to an OpenVINO IR at ``xml_path`` (+ ``.bin``),
    weights kept in fp32 (OpenVINO's default would halve them to fp16, which moves boxes more
    than the 1e-3 the runtimes are held to), with the ONNX metadata copied where OpenVINO puts an
    ONNX file's (rt_info ``framework``), so the runtime reads both files alike. Returns the path."""
    from accel.errors import UserError

    try:
        import openvino as ov
    except ImportError as exc:
        raise UserError(f"--format openvino needs OpenVINO: pip install 'detkit[openvino]' ({exc})") from None
    model = ov.convert_model(str(onnx_path))
    for key, value in onnx_metadata(onnx_path).items():
        model.set_rt_info(value, ["framework", key])
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def output_paths(output_name, fmt):
    """(the .onnx to write, the IR .xml or None) for ``--output-name`` and ``--format``: with
    openvino the IR takes the name (suffix .xml) and the .onnx is written beside it first (kept:
    onnxruntime and tools/quantize.py take it)."""
    path = Path(output_name)
    if fmt == "openvino":
        xml = path.with_suffix(".xml")
        return xml.with_suffix(".onnx"), xml
    return path, None
