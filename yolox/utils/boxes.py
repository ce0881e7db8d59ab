"""Pairwise IoU and detection post-processing (confidence + NMS). The box conversions are
``detcore.boxes``' (``yolox.utils`` re-exports them under upstream's names)."""
import torch
import torchvision

from detcore.boxes import cxcywh2xyxy


def bboxes_iou(bboxes_a, bboxes_b, xyxy=True):
    """Pairwise IoU ``[N, M]`` of two box sets, xyxy or (cx, cy, w, h) when ``xyxy`` is False."""
    if bboxes_a.shape[1] != 4 or bboxes_b.shape[1] != 4:
        raise ValueError("bboxes_iou expects [N, 4] and [M, 4] boxes")
    if not xyxy:
        bboxes_a, bboxes_b = cxcywh2xyxy(bboxes_a), cxcywh2xyxy(bboxes_b)
    tl = torch.max(bboxes_a[:, None, :2], bboxes_b[:, :2])
    br = torch.min(bboxes_a[:, None, 2:], bboxes_b[:, 2:])
    area_a = torch.prod(bboxes_a[:, 2:] - bboxes_a[:, :2], 1)
    area_b = torch.prod(bboxes_b[:, 2:] - bboxes_b[:, :2], 1)
    inter = torch.prod((br - tl).clamp(min=0), 2)
    return inter / (area_a[:, None] + area_b - inter)


def postprocess(prediction, num_classes, conf_thre=0.7, nms_thre=0.45, class_agnostic=False):
    """Decoded head output ``[B, A, 5 + C]`` -> per image ``[K, 7]`` (x1, y1, x2, y2, obj, cls_conf, cls).

    Score = obj * best class probability; boxes under ``conf_thre`` are dropped, then NMS runs per
    class (``batched_nms``) or across classes (``class_agnostic``). Rows are sorted by score.
    """
    boxes = cxcywh2xyxy(prediction[..., :4])
    class_conf, class_pred = torch.max(prediction[..., 5:5 + num_classes], dim=-1, keepdim=True)
    detections = torch.cat((boxes, prediction[..., 4:5], class_conf, class_pred.to(prediction.dtype)), dim=-1)
    scores = prediction[..., 4] * class_conf.squeeze(-1)
    keep_mask = scores >= conf_thre
    output = []
    for dets, score, keep in zip(detections, scores, keep_mask):
        dets, score = dets[keep], score[keep]
        if class_agnostic:
            idx = torchvision.ops.nms(dets[:, :4].float(), score.float(), nms_thre)
        else:
            idx = torchvision.ops.batched_nms(dets[:, :4].float(), score.float(), dets[:, 6], nms_thre)
        output.append(dets[idx])
    return output
