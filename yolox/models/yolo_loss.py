"""YOLOX training loss (released 0.3.x numerics) as one pure, TorchScript-able function.

The head calls ``yolox_loss`` with the whole batch; SimOTA (``simota.py``) assigns
anchors for all images at once, and every term is a masked sum instead of boolean
indexing, so the loss never waits on the host. The HPU recipe runs it on CPU as
TorchScript: ``get_loss_fn(scripted=True)`` returns the compiled, cached version.
"""
import warnings
from typing import Dict, Tuple

import torch
import torch.nn.functional as F

from yolox.models.simota import simota_assign

# Largest B_chunk x G x A the assignment handles at once (its [B,G,A] temporaries
# dominate memory); bigger batches are assigned chunk by chunk, with identical results.
DEFAULT_MAX_PAIRS = 1 << 23


def box_iou_aligned(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Element-wise IoU of two (cx,cy,w,h) box tensors [..., 4], as upstream ``IOUloss``."""
    tl = torch.max(pred[..., :2] - pred[..., 2:] / 2, target[..., :2] - target[..., 2:] / 2)
    br = torch.min(pred[..., :2] + pred[..., 2:] / 2, target[..., :2] + target[..., 2:] / 2)
    area_p = pred[..., 2] * pred[..., 3]
    area_g = target[..., 2] * target[..., 3]
    overlap = (tl < br).to(pred.dtype).prod(dim=-1)
    area_i = (br - tl).prod(dim=-1) * overlap
    return area_i / (area_p + area_g - area_i + 1e-16)


def assign_in_chunks(
    outputs: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_cls: torch.Tensor,
    valid: torch.Tensor,
    grids: torch.Tensor,
    strides: torch.Tensor,
    max_pairs: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run SimOTA over the batch in image chunks sized from shapes only (no host sync)."""
    batch, num_anchors = outputs.shape[0], outputs.shape[1]
    per_image = max(1, gt_boxes.shape[1] * num_anchors)
    chunk = max(1, max_pairs // per_image)
    if chunk >= batch:
        return simota_assign(
            outputs[..., :4], outputs[..., 4], outputs[..., 5:], gt_boxes, gt_cls, valid, grids, strides
        )
    fgs, gts, ious = [], [], []
    for s in range(0, batch, chunk):
        e = min(s + chunk, batch)
        fg, mg, mi = simota_assign(
            outputs[s:e, :, :4], outputs[s:e, :, 4], outputs[s:e, :, 5:],
            gt_boxes[s:e], gt_cls[s:e], valid[s:e], grids, strides,
        )
        fgs.append(fg)
        gts.append(mg)
        ious.append(mi)
    return torch.cat(fgs, 0), torch.cat(gts, 0), torch.cat(ious, 0)


def yolox_loss(
    outputs: torch.Tensor,
    origin_preds: torch.Tensor,
    grids: torch.Tensor,
    strides: torch.Tensor,
    targets: torch.Tensor,
    num_classes: int,
    use_l1: bool,
    max_pairs: int = DEFAULT_MAX_PAIRS,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """YOLOX loss for a batch.

    outputs [B,A,5+C]: decoded cx,cy,w,h (pixels), objectness logit, class logits;
    origin_preds [B,A,4]: raw regression outputs (read only when ``use_l1``);
    grids [A,2] grid x,y per anchor; strides [A]; targets [B,M,5] (cls,cx,cy,w,h),
    all-zero rows are padding (a row is valid when its sum is > 0, as upstream).
    Returns 0-dim tensors (total, 5*iou, obj, cls, l1, num_fg / max(num_gt, 1)).
    """
    outputs = outputs.float()
    targets = targets.float()
    grids = grids.float()
    strides = strides.float()
    valid = targets.sum(dim=2) > 0  # [B,M]
    gt_cls = targets[..., 0].long() * valid.long()
    gt_boxes = targets[..., 1:5]

    fg, matched_gt, matched_iou = assign_in_chunks(outputs, gt_boxes, gt_cls, valid, grids, strides, max_pairs)
    fg_f = fg.float()
    num_fg = fg_f.sum()
    num_gt = valid.float().sum()
    denom = torch.clamp(num_fg, min=1.0)

    box_t = gt_boxes.gather(1, matched_gt.unsqueeze(-1).expand(-1, -1, 4))  # [B,A,4]
    cls_t = gt_cls.gather(1, matched_gt)  # [B,A]

    # one split, not three slices: each slice's backward would fill a zero [B,A,5+C] tensor
    boxes, obj_logits, cls_logits = outputs.split((4, 1, num_classes), dim=-1)
    iou = box_iou_aligned(boxes, box_t)
    loss_iou = ((1.0 - iou * iou) * fg_f).sum() / denom

    loss_obj = F.binary_cross_entropy_with_logits(obj_logits.squeeze(-1), fg_f, reduction="none").sum() / denom

    # BCE-with-logits against one-hot x IoU, summed over classes, is
    # sum_c softplus(x_c) - IoU * x_gt: no [B,A,C] target tensor, no one-hot (whose check syncs)
    cls_bce = F.softplus(cls_logits).sum(-1) - cls_logits.gather(2, cls_t.unsqueeze(-1)).squeeze(-1) * matched_iou
    loss_cls = (cls_bce * fg_f).sum() / denom

    if use_l1:
        s = strides.view(1, -1)
        l1_target = torch.stack(
            [
                box_t[..., 0] / s - grids[:, 0].view(1, -1),
                box_t[..., 1] / s - grids[:, 1].view(1, -1),
                torch.log(box_t[..., 2] / s + 1e-8),
                torch.log(box_t[..., 3] / s + 1e-8),
            ],
            dim=-1,
        )
        l1 = (origin_preds.float() - l1_target).abs().sum(-1)
        loss_l1 = (l1 * fg_f).sum() / denom
    else:
        loss_l1 = torch.zeros((), dtype=outputs.dtype, device=outputs.device)

    iou_w = 5.0 * loss_iou  # upstream reg_weight
    total = iou_w + loss_obj + loss_cls + loss_l1
    return total, iou_w, loss_obj, loss_cls, loss_l1, num_fg / torch.clamp(num_gt, min=1.0)


_SCRIPTED: Dict[str, torch.jit.ScriptFunction] = {}


def get_loss_fn(scripted: bool):
    """The eager ``yolox_loss``, or its ``torch.jit.script`` compilation (compiled once, cached)."""
    if not scripted:
        return yolox_loss
    if "loss" not in _SCRIPTED:
        with warnings.catch_warnings():  # TorchScript is deprecated upstream; the HPU recipe needs it
            warnings.simplefilter("ignore", FutureWarning)
            _SCRIPTED["loss"] = torch.jit.script(yolox_loss)
    return _SCRIPTED["loss"]
