"""Box conversions, for numpy arrays and torch tensors alike (plain slicing arithmetic: nothing here
imports torch, so the torch-free runtime uses them too). The layouts:

- ``xyxy``: corners x1, y1, x2, y2 (detections, the runtime, VOC; SSD's ``ltrb``);
- ``xywh``: top-left corner and size (COCO's json ``bbox``);
- ``cxcywh``: centre and size (YOLOX's targets and head output; SSD's ``xywh`` default boxes).

Each takes boxes ``[..., 4+]`` (any leading dimensions; columns past the fourth are copied as they
are) and returns a new array or tensor of the same dtype: the input is never written (numpy
``copy``, torch ``clone``, so autograd follows a tensor through)."""


def _copy(boxes):
    clone = getattr(boxes, "clone", None)            # a torch.Tensor; a numpy array has copy()
    return clone() if clone is not None else boxes.copy()


def xyxy2xywh(boxes):
    """(x1, y1, x2, y2) -> (x1, y1, w, h)."""
    out = _copy(boxes)
    out[..., 2] = boxes[..., 2] - boxes[..., 0]
    out[..., 3] = boxes[..., 3] - boxes[..., 1]
    return out


def xywh2xyxy(boxes):
    """(x1, y1, w, h) -> (x1, y1, x2, y2)."""
    out = _copy(boxes)
    out[..., 2] = boxes[..., 0] + boxes[..., 2]
    out[..., 3] = boxes[..., 1] + boxes[..., 3]
    return out


def xyxy2cxcywh(boxes):
    """(x1, y1, x2, y2) -> (cx, cy, w, h): the centre is x1 + w * 0.5."""
    out = _copy(boxes)
    out[..., 2] = boxes[..., 2] - boxes[..., 0]
    out[..., 3] = boxes[..., 3] - boxes[..., 1]
    out[..., 0] = boxes[..., 0] + out[..., 2] * 0.5
    out[..., 1] = boxes[..., 1] + out[..., 3] * 0.5
    return out


def cxcywh2xyxy(boxes):
    """(cx, cy, w, h) -> (x1, y1, x2, y2): cx -/+ w * 0.5."""
    out = _copy(boxes)
    out[..., 0] = boxes[..., 0] - boxes[..., 2] * 0.5
    out[..., 1] = boxes[..., 1] - boxes[..., 3] * 0.5
    out[..., 2] = boxes[..., 0] + boxes[..., 2] * 0.5
    out[..., 3] = boxes[..., 1] + boxes[..., 3] * 0.5
    return out
