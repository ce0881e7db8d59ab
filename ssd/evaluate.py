"""COCO mAP for SSD300: decode on every rank, gather the detections, score on rank 0 (accel.coco_eval)."""
import contextlib

import numpy as np
import torch

import accel
from accel.coco_eval import evaluate_bbox, format_summary


def detections_to_coco(decoded, img_ids, sizes, cat_ids):
    """Decoded per-image (ltrb normalised, labels 1..K, scores) -> numpy rows for ``COCO.loadRes``.

    Rows are [image_id, x, y, w, h, score, category_id] in original-image pixels with the
    original COCO category ids (label i maps back to ``cat_ids[i - 1]``).
    """
    cat_lookup = torch.tensor([0] + list(cat_ids), dtype=torch.float64)
    rows = []
    for (boxes, labels, scores), img_id, (h, w) in zip(decoded, img_ids.tolist(), sizes.tolist()):
        boxes = boxes.detach().to("cpu", torch.float64) * torch.tensor([w, h, w, h], dtype=torch.float64)
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
        ids = torch.full((len(boxes), 1), float(img_id), dtype=torch.float64)
        rows.append(torch.cat([ids, xywh, scores.detach().to("cpu", torch.float64)[:, None],
                               cat_lookup[labels.detach().cpu()][:, None]], dim=1))
    return torch.cat(rows).numpy() if rows else np.zeros((0, 7))


def coco_map(coco_gt, rows, img_ids=None, verbose=True):
    """COCO bbox mAP (IoU 0.50:0.95) of detection rows against ``coco_gt``; prints the summary table."""
    if len(rows) == 0:
        print("coco eval: no detections, mAP = 0.0")
        return 0.0
    coco_eval = evaluate_bbox(coco_gt, rows, img_ids)
    if verbose:
        print(format_summary(coco_eval.stats), end="", flush=True)
    return float(coco_eval.stats[0])


@torch.no_grad()
def evaluate(model, loader, encoder, dataset, device, nms_valid_thresh=0.05, precision=None):
    """mAP over this rank's loader shard, gathered to all ranks (same value returned everywhere)."""
    was_training = model.training
    model.eval()
    rows = []
    for imgs, _, _, img_ids, sizes in loader:
        imgs = imgs.to(device, non_blocking=True)
        ctx = precision.autocast() if precision is not None else contextlib.nullcontext()
        with ctx:
            ploc, plabel = model(imgs)
        accel.mark_step(device)
        decoded = encoder.decode_batch(ploc.float(), plabel.float(), criteria=0.5, max_output=200,
                                       nms_valid_thresh=nms_valid_thresh)
        rows.append(detections_to_coco(decoded, img_ids, sizes, dataset.cat_ids))
    local = np.concatenate(rows) if rows else np.zeros((0, 7))
    gathered = accel.all_gather_object(local)
    mean_ap = None
    if accel.is_main_process():
        mean_ap = coco_map(dataset.coco, np.concatenate(gathered), img_ids=dataset.ids)
    mean_ap = accel.broadcast_object(mean_ap, src=0)
    model.train(was_training)
    return mean_ap
