"""SimOTA label assignment of the released YOLOX (0.3.x), batched over images.

Ground truth arrives padded to ``[B, G]`` with a validity mask, so one set of tensor
ops assigns the whole batch: no Python loop over images or boxes, and nothing reads a
value back to the host (dynamic k is bounded by 10, so a fixed ``topk(10)`` plus a
rank mask replaces upstream's per-GT ``topk(k)``). Padding GTs and non-candidate
anchors get an infinite cost, which makes them inert in every step.
"""
from typing import Tuple

import torch


def pairwise_iou(gt: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """IoU of every GT with every prediction, both (cx, cy, w, h): [B,G,4] x [B,A,4] -> [B,G,A].

    Same corner arithmetic as upstream ``bboxes_iou(xyxy=False)``; clamping the overlap
    at 0 equals its "both sides positive" mask, so the values agree bit for bit.
    """
    g = gt.unsqueeze(2)  # [B,G,1,4]
    p = pred.unsqueeze(1)  # [B,1,A,4]
    w = torch.min(g[..., 0] + g[..., 2] / 2, p[..., 0] + p[..., 2] / 2)
    w = (w - torch.max(g[..., 0] - g[..., 2] / 2, p[..., 0] - p[..., 2] / 2)).clamp_(min=0.0)
    h = torch.min(g[..., 1] + g[..., 3] / 2, p[..., 1] + p[..., 3] / 2)
    h = (h - torch.max(g[..., 1] - g[..., 3] / 2, p[..., 1] - p[..., 3] / 2)).clamp_(min=0.0)
    area_i = w.mul_(h)
    union = (g[..., 2] * g[..., 3] + p[..., 2] * p[..., 3]).sub_(area_i)
    return area_i.div_(union)


def candidate_masks(
    gt: torch.Tensor, valid: torch.Tensor, grids: torch.Tensor, strides: torch.Tensor, center_radius: float = 2.5
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Anchor centres inside each GT box, and within ``center_radius`` strides of each GT centre: two [B,G,A] masks.

    ``x > edge`` is upstream's ``x - edge > 0`` without the [B,G,A] subtraction (equal in IEEE floats).
    """
    xc = (grids[:, 0] * strides + 0.5 * strides).view(1, 1, -1)
    yc = (grids[:, 1] * strides + 0.5 * strides).view(1, 1, -1)
    cx, cy = gt[..., 0:1], gt[..., 1:2]
    w, h = gt[..., 2:3], gt[..., 3:4]
    in_box = xc > cx - 0.5 * w
    in_box &= xc < cx + 0.5 * w
    in_box &= yc > cy - 0.5 * h
    in_box &= yc < cy + 0.5 * h
    in_box &= valid.unsqueeze(2)
    r = center_radius * strides.view(1, 1, -1)
    in_ctr = xc > cx - r
    in_ctr &= xc < cx + r
    in_ctr &= yc > cy - r
    in_ctr &= yc < cy + r
    in_ctr &= valid.unsqueeze(2)
    return in_box, in_ctr


def pairwise_cls_cost(
    cls_logits: torch.Tensor, obj_logits: torch.Tensor, gt_cls: torch.Tensor
) -> torch.Tensor:
    """Sum over classes of BCE(sqrt(sig(cls) * sig(obj)), one-hot(gt class)): [B,G,A].

    The one-hot sum is "all-negative sum over classes, swapped to positive at the GT
    class", which avoids a [B,G,A,C] tensor. Logs are clamped at -100 like torch's BCE.
    """
    p = cls_logits.sigmoid().mul_(obj_logits.unsqueeze(-1).sigmoid()).sqrt_()  # [B,A,C]
    p_gt = p.transpose(1, 2).gather(1, gt_cls.unsqueeze(2).expand(-1, -1, p.shape[1]))  # [B,G,A]
    all_neg = p.neg_().log1p_().clamp_(min=-100.0).sum(-1).unsqueeze(1)  # [B,1,A], = -BCE(p, 0) summed
    return torch.log1p(-p_gt).clamp_(min=-100.0).sub_(all_neg).sub_(torch.log(p_gt).clamp_(min=-100.0))


def simota_assign(
    pred_boxes: torch.Tensor,
    obj_logits: torch.Tensor,
    cls_logits: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_cls: torch.Tensor,
    valid: torch.Tensor,
    grids: torch.Tensor,
    strides: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Assign anchors to GTs for a batch.

    Args: pred_boxes [B,A,4] decoded (cx,cy,w,h); obj_logits [B,A]; cls_logits [B,A,C];
    gt_boxes [B,G,4]; gt_cls [B,G] long; valid [B,G] bool; grids [A,2]; strides [A].
    Returns (fg [B,A] bool, matched_gt [B,A] long, matched_iou [B,A]); the last two are
    meaningful only where fg is set. Inputs are detached: assignment carries no gradient.
    """
    pred_boxes = pred_boxes.detach().float()
    obj_logits = obj_logits.detach().float()
    cls_logits = cls_logits.detach().float()
    gt_boxes = gt_boxes.float()
    num_anchors = pred_boxes.shape[1]

    in_box, in_ctr = candidate_masks(gt_boxes, valid, grids.float(), strides.float())
    cand = (in_box | in_ctr).any(dim=1)  # [B,A]: candidate for any GT of the image
    unusable = ~(cand.unsqueeze(1) & valid.unsqueeze(2))  # [B,G,A]

    iou = pairwise_iou(gt_boxes, pred_boxes).masked_fill_(unusable, 0.0)
    cost = pairwise_cls_cost(cls_logits, obj_logits, gt_cls) + torch.log(iou + 1e-8).mul_(-3.0)
    cost = torch.where(in_box & in_ctr, cost, cost + 100000.0).masked_fill_(unusable, float("inf"))

    # dynamic k = int(sum of <= 10 IoUs) never exceeds 10: one fixed-size topk serves all GTs
    kmax = min(10, num_anchors)
    top_iou = torch.topk(iou, kmax, dim=2).values
    dynamic_k = torch.clamp(top_iou.sum(2).int(), min=1) * valid.int()  # [B,G]
    top_idx = torch.topk(cost, kmax, dim=2, largest=False).indices  # [B,G,kmax]
    ranks = torch.arange(kmax, device=cost.device).view(1, 1, -1)
    chosen = (ranks < dynamic_k.unsqueeze(2)) & ~unusable.gather(2, top_idx)

    # Per anchor: how many GTs chose it, and (exact when only one did) which GT; scattering
    # the B x G x kmax choices avoids a dense [B,G,A] matching matrix and its reductions.
    batch = cost.shape[0]
    flat_idx = top_idx.reshape(batch, -1)
    gt_index = torch.arange(cost.shape[1], device=cost.device).view(1, -1, 1)
    n_match = torch.zeros_like(cand, dtype=torch.long).scatter_add_(1, flat_idx, chosen.long().reshape(batch, -1))
    sole_gt = torch.zeros_like(n_match).scatter_add_(1, flat_idx, (chosen.long() * gt_index).reshape(batch, -1))
    cheapest_gt = torch.min(cost, dim=1).indices  # conflicts go to the lowest-cost GT
    matched_gt = torch.where(n_match > 1, cheapest_gt, sole_gt)
    fg = n_match > 0
    matched_iou = iou.gather(1, matched_gt.unsqueeze(1)).squeeze(1)
    return fg, matched_gt, matched_iou
