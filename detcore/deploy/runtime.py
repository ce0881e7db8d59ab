"""Running an exported detector without torch: numpy + onnxruntime or OpenVINO (+ OpenCV for images).

One detector class (``Detector``) over pluggable backends (``detcore.deploy.backends``: onnxruntime,
OpenVINO; ``runtime="auto"`` picks OpenVINO for an IR ``.xml``): the pre- and post-processing
exist once (``detcore.deploy.preprocess``, ``detcore.deploy.postprocess``), whatever runs the graph.

A deployment that has only the ``.onnx`` file should not need PyTorch to draw boxes, and its boxes
should be the ones the PyTorch demo draws. ``Detector`` does what the two demos do around the
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
``detkit_output`` metadata the exporters write, ``detcore.deploy.metadata``: raw and decoded maps
have the same shape). A file that is neither is one line (``UserError``). ``accel`` is imported
lazily by its package, so ``import detcore.deploy.runtime`` loads no torch (a test checks it in a
fresh interpreter).
"""
import json
from pathlib import Path

import numpy as np

from accel.errors import UserError
from detcore.deploy.backends import open_backend
from detcore.deploy.letterbox import letterbox  # YOLOX's input, the same function as training and the PyTorch demo
from detcore.deploy.metadata import META_MODEL, META_NAMES, META_NMS, META_OUTPUT, NMS_OUTPUTS, coco_class_names
from detcore.deploy.postprocess import (SSD_ANCHORS, ssd_default_boxes, ssd_postprocess, ssd_scale_back,
                                        yolox_anchor_count, yolox_decode, yolox_grids, yolox_postprocess)
from detcore.deploy.preprocess import IMAGENET_MEAN, IMAGENET_STD, SSD_SIZE, ssd_input

__all__ = ["Detector"]

DEFAULTS = {"yolox": {"conf": 0.3, "nms": 0.3}, "ssd": {"conf": 0.3, "nms": 0.5}}  # the two demos' defaults


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
                what = (f"{count} classes" if self.kind == "yolox"
                        else f"{count - 1} classes (or {count} labels with background)")
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
