"""Running an exported detector without torch: numpy + onnxruntime or OpenVINO (+ OpenCV for images).

One detector class (``Detector``) over pluggable backends (``detcore.deploy.backends``: onnxruntime,
OpenVINO; ``runtime="auto"`` picks OpenVINO for an IR ``.xml``): the pre- and post-processing
below exist once, whatever runs the graph.

A deployment that has only the ``.onnx`` file should not need PyTorch to draw boxes, and its boxes
should be the ones the PyTorch demo draws. This module does what the two demos do around the
network, in numpy, with the PyTorch paths' semantics (``tests/test_onnx_runtime.py`` finds the same
detections after NMS: boxes within 1e-3 of the image size, scores within 1e-3):

- YOLOX (``tools/export_onnx.py`` or upstream's export; one output ``[N, A, 5+C]``): letterbox
  with 114 padding (``ValTransform``), the raw map's grid decode when the graph does not decode
  (``YOLOXHead.decode``), score = objectness x best class probability, ``score >= conf``, NMS per
  class (``yolox.utils.postprocess`` as ``tools/demo.py`` calls it), boxes / letterbox ratio.
- SSD300 (``ssd/export_onnx.py``; ``(locs, confs)`` or decoded ``(boxes, scores)``): Pillow's
  bilinear resize to 300 + ImageNet normalisation (``ssd.data.to_normalised_tensor``), the
  encoder's decode (variances 0.1/0.2 over the 8732 MLPerf default boxes) and softmax, then
  ``Encoder.decode_batch``'s selection: per class the 200 best scores above ``conf``, NMS per class,
  the 200 best survivors; boxes scaled to the image and clipped as ``ssd/demo.py`` does.

- End-to-end exports (``--nms`` on either exporter; ``detcore/deploy/export_graph.py``): the graph has
  decoded and run NMS; its outputs ``num_dets``, ``boxes`` (input pixels), ``scores``, ``classes``
  only need mapping back to the image (YOLOX / letterbox ratio; SSD x image / 300, clipped).

The kind of model is read off the graph's input and output shapes (and, for a YOLOX map, the
``detkit_output`` metadata the exporters write: raw and decoded maps have the same shape). A file
that is neither is one line (``UserError``). ``accel`` is imported lazily by its package, so
``import detcore.deploy.runtime`` loads no torch (a test checks it in a fresh interpreter).
"""
import importlib.util
import json
import math
from pathlib import Path

import cv2
import numpy as np

from accel.errors import UserError
from detcore.deploy.backends import RUNTIMES, open_backend  # noqa: F401  (RUNTIMES: the --runtime choices)
from detcore.deploy.draw import draw  # noqa: F401  (the drawing half of the runtime, shared with the PyTorch demos)
from detcore.deploy.letterbox import letterbox  # YOLOX's input, the same function as training and the PyTorch demo

__all__ = ["Detector", "OnnxDetector", "draw", "letterbox", "ssd_input", "pil_bilinear_resize", "yolox_grids", "yolox_decode",
           "ssd_default_boxes", "ssd_scale_back", "nms", "yolox_postprocess", "ssd_postprocess", "write_metadata",
           "coco_class_names"]

# Metadata the exporters write into the .onnx (read back through onnxruntime, no onnx package).
META_MODEL = "detkit_model"          # "yolox" | "ssd"
META_OUTPUT = "detkit_output"        # "raw" | "decoded"
META_NAMES = "class_names"           # JSON list: YOLOX class index -> name; SSD label -> name (0 background)
META_NMS = "detkit_nms"              # JSON: conf, iou, max_det, agnostic, num_classes of an end-to-end graph
NMS_OUTPUTS = ("num_dets", "boxes", "scores", "classes")   # an end-to-end graph's outputs, in this order

YOLOX_STRIDES = (8, 16, 32)
YOLOX_MAX_LOG_SIZE = 20.0            # yolox.models.yolo_head.MAX_LOG_SIZE: the decode caps log-sizes there
SSD_SIZE = 300
SSD_ANCHORS = 8732
SSD_VARIANCES = (0.1, 0.2)           # scale_xy, scale_wh of dboxes300_coco
SSD_MAX_CANDIDATES = 200             # per class before NMS (the reference's max_num)
SSD_MAX_OUTPUT = 200                 # detections per image after NMS
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
DEFAULTS = {"yolox": {"conf": 0.3, "nms": 0.3}, "ssd": {"conf": 0.3, "nms": 0.5}}  # the two demos' defaults


# ---------------------------------------------------------------- writing (export side)

def write_metadata(path, model, output, class_names=None):
    """Record what the exporter wrote in ``path``'s metadata (needs the ``onnx`` package, which
    the export has anyway): the runtime then knows a decoded YOLOX map from a raw one and the
    class names without being told."""
    import onnx

    proto = onnx.load(str(path))
    fields = {META_MODEL: model, META_OUTPUT: output}
    if class_names:
        fields[META_NAMES] = json.dumps([str(n) for n in class_names])
    kept = [p for p in proto.metadata_props if p.key not in fields]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in fields.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def coco_class_names():
    """The 80 COCO names of ``yolox/data/datasets/coco_classes.py``, loaded as a plain file: the
    ``yolox`` package's ``__init__`` imports torch, this data module does not. None when the
    file is not installed beside this package."""
    path = Path(__file__).resolve().parents[1] / "yolox" / "data" / "datasets" / "coco_classes.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("_detkit_coco_classes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.COCO_CLASSES)


# ---------------------------------------------------------------- preprocessing

def _pillow():
    """PIL.Image when Pillow is installed, else None (the numpy filter below stands in)."""
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def _bilinear_taps(in_size, out_size):
    """Pillow's antialiased bilinear filter along one axis (libImaging/Resample.c
    ``precompute_coeffs`` + ``normalize_coeffs_8bpc``): per output pixel the first source index
    of every tap and its 22-bit fixed-point weight, as ``[out, taps]`` arrays."""
    bits = 22
    scale = in_size / out_size
    support = max(scale, 1.0)                     # the filter widens when shrinking: antialiasing
    taps = int(math.ceil(support)) * 2 + 1
    centre = (np.arange(out_size) + 0.5) * scale
    lo = np.maximum((centre - support + 0.5).astype(np.int64), 0)
    hi = np.minimum((centre + support + 0.5).astype(np.int64), in_size)
    idx = lo[:, None] + np.arange(taps)
    weight = np.clip(1.0 - np.abs((idx - centre[:, None] + 0.5) * (1.0 / support)), 0.0, None)
    weight *= idx < hi[:, None]
    total = weight.sum(axis=1, keepdims=True)
    weight = np.divide(weight, total, out=weight, where=total != 0)
    return np.minimum(idx, in_size - 1), np.floor(weight * (1 << bits) + 0.5), bits


def _resample_axis(img, out_size, axis):
    """One fixed-point pass of Pillow's filter along ``axis`` (0 rows, 1 columns) of HxWxC
    uint8-valued float64 data; float64 holds the integer sums exactly (< 2^31)."""
    idx, weight, bits = _bilinear_taps(img.shape[axis], out_size)
    if axis == 1:
        acc = np.einsum("hotc,ot->hoc", img[:, idx], weight)
    else:
        acc = np.einsum("otwc,ot->owc", img[idx], weight)
    return np.clip(np.floor((acc + (1 << (bits - 1))) / (1 << bits)), 0, 255)


def pil_bilinear_resize(rgb, size):
    """``rgb`` (HxWx3 uint8) resized to ``size`` (h, w) as ``PIL.Image.resize(BILINEAR)`` does,
    which is what SSD's evaluation and demo feed the network. Pillow itself when installed
    (bit-exact by construction); otherwise its documented algorithm in numpy (horizontal pass,
    then vertical): equal to Pillow for a resize along one axis, and within one grey level for
    both, because recent Pillow builds pick the order of the two passes themselves."""
    image_module = _pillow()
    if image_module is not None:
        pil = image_module.fromarray(np.ascontiguousarray(rgb))
        return np.asarray(pil.resize((size[1], size[0]), image_module.BILINEAR))
    out = rgb.astype(np.float64)
    if out.shape[1] != size[1]:
        out = _resample_axis(out, size[1], axis=1)
    if out.shape[0] != size[0]:
        out = _resample_axis(out, size[0], axis=0)
    return out.astype(np.uint8)


def ssd_input(bgr):
    """SSD300's eval input for a BGR image: RGB, Pillow-bilinear to 300x300, /255, ImageNet
    normalisation, as float32 1x3x300x300 (``ssd.data.to_normalised_tensor``)."""
    rgb = pil_bilinear_resize(np.ascontiguousarray(bgr[:, :, ::-1]), (SSD_SIZE, SSD_SIZE))
    x = (rgb.astype(np.float32) / np.float32(255) - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


# ---------------------------------------------------------------- decoding

def yolox_grids(height, width, strides=YOLOX_STRIDES):
    """Anchor cells ``[A, 2]`` (x, y) and their strides ``[A]`` in the head's output order
    (level by level, row-major), as ``YOLOXHead.grids_and_strides``."""
    grids, steps = [], []
    for s in strides:
        ys, xs = np.meshgrid(np.arange(height // s), np.arange(width // s), indexing="ij")
        grids.append(np.stack((xs, ys), axis=-1).reshape(-1, 2))
        steps.append(np.full(grids[-1].shape[0], s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(steps).astype(np.float32)


def yolox_anchor_count(height, width, strides=YOLOX_STRIDES):
    return sum((height // s) * (width // s) for s in strides)


def yolox_decode(raw, grids, strides):
    """Raw map ``[..., A, 5+C]`` (offsets, log-sizes, sigmoid scores) -> centre/size boxes in input
    pixels, as ``YOLOXHead.decode``: centre = (offset + cell) * stride, size = exp(log-size) * stride."""
    s = strides[:, None]
    xy = (raw[..., :2] + grids) * s
    wh = np.exp(np.minimum(raw[..., 2:4], YOLOX_MAX_LOG_SIZE)) * s
    return np.concatenate([xy, wh, raw[..., 4:]], axis=-1)


def ssd_default_boxes():
    """The 8732 SSD300 default boxes as ``dboxes300_coco()(order="xywh")``: feature maps
    38/19/10/5/3/1, steps 8/16/32/64/100/300, scales 21..315, ratios (2), (2, 3) x3, (2), (2);
    per map, per anchor shape, per location row-major; computed in float64, stored float32,
    clamped to [0, 1], exactly as ``ssd.anchors.DefaultBoxes``."""
    fig, feat = SSD_SIZE, (38, 19, 10, 5, 3, 1)
    steps, scales = (8, 16, 32, 64, 100, 300), (21, 45, 99, 153, 207, 261, 315)
    ratios = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
    levels = []
    for idx, size in enumerate(feat):
        centres = (np.arange(size, dtype=np.float64) + 0.5) / (fig / steps[idx])
        cy, cx = np.meshgrid(centres, centres, indexing="ij")
        sk1, sk2 = scales[idx] / fig, scales[idx + 1] / fig
        sk3 = math.sqrt(sk1 * sk2)
        shapes = [(sk1, sk1), (sk3, sk3)]
        for r in ratios[idx]:
            w, h = sk1 * math.sqrt(r), sk1 / math.sqrt(r)
            shapes += [(w, h), (h, w)]
        xy = np.broadcast_to(np.stack((cx.ravel(), cy.ravel()), axis=1), (len(shapes), size * size, 2))
        wh = np.broadcast_to(np.array(shapes)[:, None, :], (len(shapes), size * size, 2))
        levels.append(np.concatenate((xy, wh), axis=2).reshape(-1, 4).astype(np.float32))
    return np.clip(np.concatenate(levels), 0.0, 1.0)


def ssd_scale_back(locs, confs, anchors):
    """One image's network maps ``locs`` [4, A] and ``confs`` [C, A] -> (ltrb boxes [A, 4] in [0, 1]
    image units, class probabilities [A, C]), as ``Encoder.scale_back_batch``."""
    off = locs.T.astype(np.float32)
    xy = off[:, :2] * np.float32(SSD_VARIANCES[0]) * anchors[:, 2:] + anchors[:, :2]
    wh = np.exp(off[:, 2:] * np.float32(SSD_VARIANCES[1])) * anchors[:, 2:]
    boxes = np.concatenate((xy - 0.5 * wh, xy + 0.5 * wh), axis=1)
    logits = confs.T.astype(np.float32)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return boxes, e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- NMS

def nms(boxes, scores, iou_threshold, classes=None):
    """Greedy NMS as ``torchvision.ops.nms`` (``batched_nms`` when ``classes`` is given: boxes only
    suppress boxes of their own class). Highest score first; a box is dropped when its IoU with a
    kept one is above ``iou_threshold`` (a nan IoU suppresses nothing, as torchvision). Returns the
    kept indices, best score first. One vectorised IoU row per kept box."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        ih = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = iw * ih
        with np.errstate(divide="ignore", invalid="ignore"):
            suppress = inter / (areas[i] + areas[rest] - inter) > iou_threshold
        if classes is not None:
            suppress &= classes[rest] == classes[i]
        order = rest[~suppress]
    return np.asarray(keep, dtype=np.int64)


# ---------------------------------------------------------------- postprocessing

def yolox_postprocess(pred, conf, nms_threshold, ratio, classes=None, agnostic=False):
    """One image's decoded map ``[A, 5+C]`` -> rows (x1, y1, x2, y2, score, class) in source image
    pixels, best first: ``yolox.utils.postprocess`` (class-aware NMS, or across classes when
    ``agnostic``) + ``tools/demo.py``'s scaling and its drop of non-finite rows (an undertrained
    model may decode nan boxes). ``classes``: keep only anchors whose best class is one of these,
    before NMS (as Ultralytics' ``--classes``)."""
    cls_scores = pred[:, 5:]
    cls = cls_scores.argmax(axis=1)
    score = pred[:, 4] * cls_scores[np.arange(len(pred)), cls]
    sel = score >= conf
    if classes is not None:
        sel &= np.isin(cls, classes)
    c, wh = pred[sel, :2], pred[sel, 2:4]
    boxes = np.concatenate((c - wh * 0.5, c + wh * 0.5), axis=1)
    keep = nms(boxes, score[sel], nms_threshold, classes=None if agnostic else cls[sel])
    rows = np.concatenate((boxes[keep] / ratio, score[sel][keep, None], cls[sel][keep, None].astype(np.float32)),
                          axis=1).astype(np.float32)
    return rows[np.isfinite(rows).all(axis=1)]


def ssd_postprocess(boxes, probs, conf, nms_threshold, width, height, classes=None, agnostic=False):
    """One image's ltrb boxes [A, 4] (image units) and probabilities [A, C] -> rows (x1, y1, x2, y2,
    score, label) in pixels, best first: per class (background 0 skipped) the 200 best scores above
    ``conf``, NMS per class (across classes when ``agnostic``), the 200 best survivors
    (``Encoder.decode_batch``); then clipped to the image, non-finite and empty boxes dropped
    (``ssd/demo.py``). ``classes``: the labels whose candidates are kept (before NMS)."""
    cls_scores = probs[:, 1:].T                                    # [C-1, A]
    if classes is not None:
        cls_scores = cls_scores * np.isin(np.arange(1, probs.shape[1]), classes)[:, None]
    k = min(SSD_MAX_CANDIDATES, cls_scores.shape[1])
    top = np.argpartition(-cls_scores, k - 1, axis=1)[:, :k]       # each class's k best anchors
    top_scores = np.take_along_axis(cls_scores, top, axis=1)
    cls_idx, slot = np.nonzero(top_scores > conf)
    anchor, scores = top[cls_idx, slot], top_scores[cls_idx, slot]
    cand = boxes[anchor]
    keep = nms(cand, scores, nms_threshold, classes=None if agnostic else cls_idx)[:SSD_MAX_OUTPUT]
    size = np.array([width, height, width, height], dtype=np.float32)
    pixels = np.minimum(np.maximum(cand[keep] * size, 0), size)
    rows = np.concatenate((pixels, scores[keep, None], (cls_idx[keep] + 1)[:, None].astype(np.float32)), axis=1)
    rows = rows.astype(np.float32)
    ok = np.isfinite(rows).all(axis=1) & (rows[:, 2] > rows[:, 0]) & (rows[:, 3] > rows[:, 1])
    return rows[ok]


# ---------------------------------------------------------------- the model

def _is_dim(value):
    return isinstance(value, int) and value > 0


class Detector:
    """An exported YOLOX or SSD300 under a pluggable backend (``detcore.deploy.backends``: onnxruntime or
    OpenVINO, the same pre- and post-processing for both): ``detector(bgr_image)`` -> float32 rows
    (x1, y1, x2, y2, score, class) in image pixels, best first; ``detect_batch(images)`` runs
    them through the network as one batch (split, and the last piece zero-padded, when the file
    has a fixed batch); ``names[class]`` labels the rows.

    ``conf`` / ``nms`` default to the PyTorch demo's of the kind (YOLOX 0.3 / 0.3, SSD 0.3 / 0.5),
    for an end-to-end (``--nms``) export to the thresholds baked into it: the graph has already
    applied them, so only a higher ``conf`` can be honoured (it filters the graph's output) and a
    lower one, another IoU or another NMS mode is one line asking for a re-export.
    ``classes`` keeps the given class indices (YOLOX) / labels (SSD, 1 = the first class) before
    NMS; on an end-to-end graph it filters its output (the same for per-class NMS; with an
    agnostic graph, a box of a dropped class may already have suppressed one of a kept class).
    ``agnostic``: one NMS across classes. ``class_names`` overrides the names stored in the model
    (else COCO's for 80 YOLOX classes or 81 SSD labels, else the numbers); ``legacy`` is YOLOX's
    old RGB-normalised input; ``runtime`` 'auto' | 'onnxruntime' | 'openvino'; ``threads`` the
    backend's intra-op threads; ``precision`` OpenVINO's inference precision ('f32' unless asked).
    """

    def __init__(self, path, conf=None, nms=None, class_names=None, legacy=False, threads=None,
                 runtime="auto", classes=None, agnostic=None, flag="--onnx", precision="f32"):
        self.path, self.flag = Path(path), flag
        self.backend = open_backend(path, runtime, threads, flag=flag, precision=precision)
        self.runtime = self.backend.name
        self.input = self.backend.inputs[0][0] if self.backend.inputs else None
        self.kind, self.output, self.input_size, self.num_classes = self._recognise()
        self.batch = self.backend.inputs[0][1][0]            # None: any batch
        self.baked = json.loads(self.backend.metadata[META_NMS]) if self.output == "nms" else None
        defaults = ({"conf": self.baked["conf"], "nms": self.baked["iou"]} if self.baked else DEFAULTS[self.kind])
        self.conf = defaults["conf"] if conf is None else conf
        self.nms = defaults["nms"] if nms is None else nms
        self.agnostic = bool(self.baked["agnostic"] if (self.baked and agnostic is None) else agnostic)
        if not 0 <= self.conf <= 1:
            raise UserError(f"--conf must be in [0, 1] (got {self.conf})")
        if not 0 < self.nms <= 1:
            raise UserError(f"--nms must be in (0, 1] (got {self.nms})")
        if self.baked:
            self._check_baked()
        if legacy and self.kind != "yolox":
            raise UserError(f"--legacy is YOLOX's old input normalisation; {self.path} is an SSD300")
        self.legacy = legacy
        self.names = self._names(class_names)
        self.classes = self._classes(classes)
        if self.kind == "yolox":
            self.grids, self.strides = yolox_grids(*self.input_size)
        else:
            self.anchors = ssd_default_boxes()

    # -- loading and recognising
    def _bad(self, why):
        return UserError(f"{self.flag} {self.path}: not a YOLOX or SSD300 export (tools/export_onnx.py, "
                         f"ssd/export_onnx.py or upstream YOLOX's): {why}")

    def _check_baked(self):
        """An end-to-end graph has already applied its NMS: settings it cannot honour are one line."""
        baked, why = self.baked, None
        if self.conf < baked["conf"] - 1e-9:
            why = f"--conf {self.conf} is below the score threshold {baked['conf']} baked into it"
        elif abs(self.nms - baked["iou"]) > 1e-9:
            why = f"--nms {self.nms} differs from the IoU threshold {baked['iou']} baked into it"
        elif self.agnostic != bool(baked["agnostic"]):
            why = (f"its NMS is {'class-agnostic' if baked['agnostic'] else 'per class'}, "
                   f"{'--agnostic-nms' if self.agnostic else 'per-class NMS'} was asked for")
        if why:
            raise UserError(f"{self.flag} {self.path}: an end-to-end (--nms) export; {why}: re-export with "
                            "--conf / --iou / --agnostic-nms, or run the export without --nms")

    def _output_shapes(self):
        """Declared output shapes, or (when the graph leaves a dimension symbolic) the shapes of
        one run on a zero image."""
        shapes = [list(s) for _, s in self.backend.outputs]
        if all(_is_dim(d) for s in shapes for d in s[1:]):
            return shapes
        shape = self.backend.inputs[0][1]
        probe = np.zeros([shape[0] or 1] + list(shape[1:]), dtype=np.float32)
        return [list(a.shape) for a in self.backend.run(probe)]

    def _recognise(self):
        """(kind, output, (h, w), classes) from the graph: one image input [N, 3, H, W]; YOLOX: one
        output [N, A, 5+C] with A the anchors of H x W at strides 8/16/32; SSD: 300x300 and
        (locs [N, 4, 8732], confs [N, C, 8732]) or (boxes [N, 8732, 4], scores [N, 8732, C]);
        end-to-end (either model): num_dets, boxes, scores, classes with the exporter's metadata."""
        inputs, outputs = self.backend.inputs, self.backend.outputs
        if len(inputs) != 1:
            raise self._bad(f"it takes {len(inputs)} inputs ({', '.join(n for n, _ in inputs)}), "
                            "a detector one image batch")
        name, shape = inputs[0]
        element = self.backend.input_type
        if len(shape) != 4 or shape[1] != 3 or element != "float":
            shown = [d if d is not None else "?" for d in shape]
            raise self._bad(f"input '{name}' is {element} {shown}, expected a float "
                            "image batch [N, 3, H, W]")
        if not (_is_dim(shape[2]) and _is_dim(shape[3])):
            raise self._bad(f"input '{name}' {['?' if d is None else d for d in shape]} has no fixed height and width")
        h, w = shape[2], shape[3]
        meta = self.backend.metadata
        names = ", ".join(f"'{n}'" for n, _ in outputs)
        if [n for n, _ in outputs] == list(NMS_OUTPUTS):
            kind = meta.get(META_MODEL)
            if META_NMS not in meta or kind not in ("yolox", "ssd"):
                raise self._bad(f"outputs {names} look end-to-end but the file has no {META_NMS} / "
                                f"{META_MODEL} metadata (export it with --nms)")
            if kind == "ssd" and (h, w) != (SSD_SIZE, SSD_SIZE):
                raise self._bad(f"an SSD300 end-to-end graph with a {h}x{w} input")
            return kind, "nms", (h, w), int(json.loads(meta[META_NMS])["num_classes"])
        if len(outputs) == 1:
            out = self._output_shapes()[0]
            anchors = yolox_anchor_count(h, w)
            if len(out) != 3 or out[1] != anchors or out[2] < 6:
                raise self._bad(f"output {names} is {out}, expected a YOLOX map [N, {anchors}, 5+C] "
                                f"for a {h}x{w} input")
            return "yolox", meta.get(META_OUTPUT, "raw"), (h, w), out[2] - 5
        if len(outputs) == 2 and (h, w) == (SSD_SIZE, SSD_SIZE):
            first, second = self._output_shapes()
            if len(first) == len(second) == 3:
                if first[1:] == [4, SSD_ANCHORS] and second[2] == SSD_ANCHORS and second[1] >= 2:
                    return "ssd", "raw", (h, w), second[1]
                if first[1:] == [SSD_ANCHORS, 4] and second[1] == SSD_ANCHORS and second[2] >= 2:
                    return "ssd", "decoded", (h, w), second[2]
        raise self._bad(f"input {h}x{w} with outputs {names}, expected one YOLOX map [N, A, 5+C] or SSD300's "
                        f"(locs [N, 4, {SSD_ANCHORS}], confs [N, C, {SSD_ANCHORS}]) / (boxes [N, {SSD_ANCHORS}, 4], "
                        f"scores [N, {SSD_ANCHORS}, C]) at 300x300, or an end-to-end "
                        f"({', '.join(NMS_OUTPUTS)})")

    def _names(self, given):
        """Class names: ``given`` (a list or a comma-separated string), else the model's metadata,
        else COCO's for 80 YOLOX classes / 81 SSD labels, else the numbers. SSD's list is by label
        (0 = background)."""
        count = self.num_classes
        if isinstance(given, str):
            given = [n.strip() for n in given.split(",")]
        if given:
            if self.kind == "ssd" and len(given) == count - 1:
                given = ["background", *given]
            if len(given) != count:
                what = f"{count} classes" if self.kind == "yolox" else f"{count - 1} classes (or {count} labels with background)"
                raise UserError(f"--class_names has {len(given)} names; {self.path} has {what}")
            return list(given)
        stored = self.backend.metadata.get(META_NAMES)
        if stored:
            try:
                names = json.loads(stored)
            except ValueError:
                names = None
            if isinstance(names, list) and len(names) == count:
                return [str(n) for n in names]
        coco = coco_class_names() if (self.kind, count) in (("yolox", 80), ("ssd", 81)) else None
        if coco:
            return coco if self.kind == "yolox" else ["background", *coco]
        return [str(i) for i in range(count)]

    def _classes(self, classes):
        """``--classes`` as a sorted int array (None: all); an index the model does not have is one line."""
        if classes is None:
            return None
        wanted = np.asarray(sorted({int(c) for c in classes}), dtype=np.int64)
        low, high = (0, self.num_classes - 1) if self.kind == "yolox" else (1, self.num_classes - 1)
        bad = wanted[(wanted < low) | (wanted > high)]
        if len(bad):
            what = "class indices" if self.kind == "yolox" else "labels (0 is the background)"
            raise UserError(f"--classes {' '.join(map(str, bad.tolist()))}: {self.path} has {what} {low}..{high}")
        return wanted

    def describe(self):
        h, w = self.input_size
        what = "YOLOX, raw map decoded here" if self.output == "raw" else "YOLOX, decoded in the graph"
        if self.kind == "ssd":
            what = "SSD300, (locs, confs) decoded here" if self.output == "raw" else "SSD300, (boxes, scores)"
        if self.output == "nms":
            b = self.baked
            what = (f"{'YOLOX' if self.kind == 'yolox' else 'SSD300'} end-to-end (NMS in the graph: conf {b['conf']}, "
                    f"IoU {b['iou']}, max {b['max_det']}{', class-agnostic' if b['agnostic'] else ''})")
        batch = "any batch" if self.batch is None else f"batch {self.batch}"
        return (f"{self.path}: {what}, input {h}x{w}, {batch}, {len(self.names)} "
                f"{'classes' if self.kind == 'yolox' else 'labels'}, {self.runtime}")

    # -- running
    def preprocess(self, bgr):
        """(network input [1, 3, H, W] float32, what ``postprocess`` needs to map boxes back)."""
        if self.kind == "ssd":
            return ssd_input(bgr), bgr.shape[:2]
        x, ratio = letterbox(bgr, self.input_size)
        if self.legacy:
            x = ((x[::-1] / 255.0 - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]).astype(np.float32)
        return np.ascontiguousarray(x[None]), ratio

    def infer(self, x):
        """The backend's outputs for the batch ``x`` [B, 3, H, W]. A file with a fixed batch n runs
        it n images at a time, the last piece zero-padded and its extra rows dropped."""
        if self.batch is None or len(x) == self.batch:
            return self.backend.run(x)
        pieces = []
        for start in range(0, len(x), self.batch):
            part = x[start:start + self.batch]
            short = self.batch - len(part)
            if short:
                part = np.concatenate([part, np.zeros((short, *part.shape[1:]), dtype=part.dtype)])
            pieces.append([o[:len(part) - short] for o in self.backend.run(part)])
        return [np.concatenate(outs) for outs in zip(*pieces)]

    def postprocess(self, outputs, info, index=0):
        """Rows of image ``index`` of the batch ``outputs``; ``info`` is its ``preprocess`` info."""
        if self.output == "nms":
            return self._postprocess_nms(outputs, info, index)
        if self.kind == "yolox":
            pred = outputs[0][index]
            if self.output == "raw":
                pred = yolox_decode(pred, self.grids, self.strides)
            return yolox_postprocess(pred, self.conf, self.nms, info, self.classes, self.agnostic)
        if self.output == "raw":
            boxes, probs = ssd_scale_back(outputs[0][index], outputs[1][index], self.anchors)
        else:
            boxes, probs = outputs[0][index], outputs[1][index]
        height, width = info
        return ssd_postprocess(boxes, probs, self.conf, self.nms, width, height, self.classes, self.agnostic)

    def _postprocess_nms(self, outputs, info, index):
        """An end-to-end graph's rows: its first ``num_dets`` detections, ``conf`` and ``classes``
        applied, boxes from input pixels to image pixels (YOLOX: / letterbox ratio; SSD: x image /
        300, clipped to the image as ``ssd/demo.py``), non-finite and (SSD) empty boxes dropped."""
        n = int(outputs[0][index])
        boxes, scores = outputs[1][index, :n].astype(np.float32), outputs[2][index, :n].astype(np.float32)
        cls = outputs[3][index, :n]
        keep = scores >= self.conf if self.conf > self.baked["conf"] else np.ones(n, dtype=bool)
        if self.classes is not None:
            keep &= np.isin(cls, self.classes)
        if self.kind == "yolox":
            boxes = boxes / np.float32(info)
        else:
            height, width = info
            size = np.array([width, height, width, height], dtype=np.float32)
            boxes = np.minimum(np.maximum(boxes * (size / np.float32(SSD_SIZE)), 0), size)
            keep &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        rows = np.concatenate((boxes, scores[:, None], cls[:, None].astype(np.float32)), axis=1)[keep]
        return rows[np.isfinite(rows).all(axis=1)]

    def detect_batch(self, images):
        """Rows per BGR image of ``images``, the network run once on all of them (see ``infer``)."""
        if not len(images):
            return []
        prepared = [self.preprocess(img) for img in images]
        outputs = self.infer(np.concatenate([x for x, _ in prepared]))
        return [self.postprocess(outputs, info, i) for i, (_, info) in enumerate(prepared)]

    def __call__(self, bgr):
        return self.detect_batch([bgr])[0]


OnnxDetector = Detector      # the name before the backends were pluggable
