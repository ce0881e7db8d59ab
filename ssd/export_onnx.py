"""Export an SSD300-ResNet34 checkpoint to ONNX (MLPerf's inference benchmark runs SSD-ResNet34
as ONNX): ``python ssd/export_onnx.py --checkpoint ssd_output/models/iter_N.pt --output-name ssd.onnx``.

By default the graph returns the network's two maps as the reference's model does: ``locs``
[N, 4, 8732] (box offsets) and ``confs`` [N, labels, 8732] (class logits, background first).
``--decode`` adds the box decoding (no NMS, which stays with the caller): ``boxes`` [N, 8732, 4]
ltrb in [0, 1] image coordinates and ``scores`` [N, 8732, labels] softmax probabilities, what
``Encoder.decode_batch`` feeds its per-class NMS. The batch dimension is dynamic. The file's
metadata names the model, the output kind and the checkpoint's label names (``label_map``), for
``tools/demo.py --onnx`` (``detcore/deploy/runtime.py``).

``--nms`` exports the end-to-end graph: the decoding above, then ``Encoder.decode_batch``'s
selection in the graph (per class the 200 best scores, ONNX ``NonMaxSuppression`` per class, or
across classes with ``--agnostic-nms``, ``--conf`` / ``--iou`` / ``--max-det`` baked in); outputs
``num_dets [N]``, ``boxes [N, max_det, 4]`` (x1, y1, x2, y2 in pixels of the 300x300 network
input: x image width / 300 and height / 300 for source pixels), ``scores``, ``classes`` (labels,
1 = the first class; ``detcore/deploy/export_graph.py``). ``--format openvino`` also writes an OpenVINO
IR (.xml + .bin, fp32 weights) of the same graph beside the .onnx.
"""
import sys
import warnings
from pathlib import Path

# Run as a script, Python puts ssd/ first on sys.path, where data.py / model.py would shadow any
# top-level module of the same name; replace it with the repository root (as ssd/train.py).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402

import torch  # noqa: E402
from loguru import logger  # noqa: E402
from torch import nn  # noqa: E402

from accel.errors import UserError, cli_entry  # noqa: E402
from detcore.deploy.export_graph import add_nms_args, check_nms_args  # noqa: E402
from detcore.deploy.metadata import write_metadata  # noqa: E402
from ssd import Encoder, dboxes300_coco  # noqa: E402
from ssd.data import INPUT_SIZE  # noqa: E402
from ssd.demo import load_detector  # noqa: E402


class DecodedSSD(nn.Module):
    """SSD300 followed by the encoder's ``scale_back_batch``: (boxes ltrb, class probabilities)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.encoder = net, Encoder(dboxes300_coco())

    def forward(self, images):
        return self.encoder.scale_back_batch(*self.net(images))


NMS_DEFAULTS = {"conf": 0.3, "iou": 0.5, "max_det": 200}    # ssd/demo.py's conf / nms; Encoder's max_output
CANDIDATES = 200                                            # per class before NMS (Encoder.decode_batch)


class NmsInputs(nn.Module):
    """SSD300 -> what ONNX ``NonMaxSuppression`` takes: boxes ltrb ``[N, 8732, 4]`` in [0, 1] units
    and scores ``[N, labels - 1, 8732]`` (background dropped) that keep, per class, only the 200
    best anchors (``Encoder.decode_batch``'s candidates; the others score 0, below any threshold);
    agnostic: each anchor's best candidate score ``[N, 1, 8732]`` and its label ``[N, 8732]``
    (NMS over anchors by their best class equals NMS over all (class, anchor) candidates: a
    lower-scoring copy of the same box always falls to the best one)."""

    def __init__(self, net, agnostic=False):
        super().__init__()
        self.decoded, self.agnostic = DecodedSSD(net), agnostic

    def forward(self, images):
        boxes, probs = self.decoded(images)
        cls_scores = probs[..., 1:].transpose(1, 2)
        top_scores, top_anchor = cls_scores.topk(min(CANDIDATES, cls_scores.shape[2]), dim=2)
        candidates = torch.zeros_like(cls_scores).scatter(2, top_anchor, top_scores)
        if self.agnostic:
            best, label = candidates.max(dim=1)
            return boxes, best.unsqueeze(1), label + 1
        return boxes, candidates


def make_parser():
    p = argparse.ArgumentParser(description="Export an SSD300-ResNet34 checkpoint to ONNX.")
    p.add_argument("--checkpoint", required=True, help="ssd300_latest.pth or models/iter_N.pt")
    p.add_argument("--output-name", "--output_name", dest="output_name", default="ssd300_resnet34.onnx")
    p.add_argument("--input", default="image", help="name of the ONNX input")
    p.add_argument("-o", "--opset", type=int, default=11)
    p.add_argument("--batch-size", type=int, default=1, help="batch of the traced example (dynamic anyway)")
    p.add_argument("--decode", action="store_true",
                   help="outputs boxes (ltrb, [0, 1]) and scores (softmax) instead of locs and confs")
    return add_nms_args(p, NMS_DEFAULTS)


def export(model, path, batch_size=1, opset=11, input_name="image", output_names=("locs", "confs")):
    """Trace ``model`` on a zero batch and write ``path`` with a dynamic batch dimension."""
    dummy = torch.zeros(batch_size, 3, INPUT_SIZE, INPUT_SIZE)
    axes = {name: {0: "batch"} for name in (input_name, *output_names)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (dummy,), str(path), input_names=[input_name], output_names=list(output_names),
                          opset_version=opset, dynamic_axes=axes, dynamo=False)


@cli_entry
def main(argv=None):
    from detcore.deploy.export_graph import append_nms, output_paths, save_openvino

    args = make_parser().parse_args(argv)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1 (got {args.batch_size})")
    check_nms_args(args)
    if args.nms and args.opset < 11:
        raise UserError(f"--nms needs --opset 11 or later (NonMaxSuppression, GatherND), got {args.opset}")
    net, names = load_detector(args.checkpoint, torch.device("cpu"))
    net = net.to(memory_format=torch.contiguous_format)
    path, xml_path = output_paths(args.output_name, args.format)
    path.parent.mkdir(parents=True, exist_ok=True)
    if args.nms:
        outputs = ("nms_boxes", "nms_scores") + (("nms_labels",) if args.agnostic_nms else ())
        export(NmsInputs(net, args.agnostic_nms).eval(), path, args.batch_size, args.opset, args.input, outputs)
        append_nms(path, "nms_boxes", "nms_scores", "nms_labels" if args.agnostic_nms else None,
                   max_det=args.max_det, iou=args.iou, conf=args.conf, agnostic=args.agnostic_nms,
                   box_scale=float(INPUT_SIZE), class_offset=1, num_classes=len(names))
        write_metadata(path, "ssd", "nms", names)
        outputs = (f"num_dets, boxes [N, {args.max_det}, 4] in input pixels, scores, classes (labels); conf "
                   f"{args.conf}, IoU {args.iou}, {'class-agnostic' if args.agnostic_nms else 'per-class'} NMS")
    else:
        model = DecodedSSD(net).eval() if args.decode else net
        outputs = ("boxes", "scores") if args.decode else ("locs", "confs")
        export(model, path, args.batch_size, args.opset, args.input, outputs)
        write_metadata(path, "ssd", "decoded" if args.decode else "raw", names)
        outputs = ", ".join(outputs)
    logger.info(f"wrote {path} (input {args.input}: Nx3x{INPUT_SIZE}x{INPUT_SIZE}, outputs "
                f"{outputs}; {len(names)} labels: {', '.join(names)})")
    if xml_path is not None:
        logger.info(f"wrote the OpenVINO IR {save_openvino(path, xml_path)} (+ .bin)")


if __name__ == "__main__":
    main()
