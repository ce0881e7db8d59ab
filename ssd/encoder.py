"""Ground-truth encoding and prediction decoding for SSD, with the MLPerf reference's semantics.

Matching (per image): each anchor takes the GT it overlaps most (first GT on ties); each GT then
claims its best anchor outright (first anchor on ties; a later GT wins an anchor two GTs share,
as the reference's sequential assignment does); anchors with IoU > criteria, or claimed, become
positives with that GT's box and label; the rest keep their default box and label 0.
"""
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from accel.errors import UserError
from accel.policy import chunk_items

CPU_CHUNK_PAIRS = 1 << 20  # GT-anchor pairs per CPU chunk: 4 MiB of float32 IoU per buffer


class _Anchors:
    """Default boxes on one device, plus the grid structure they are laid out on.

    Each (feature map, anchor shape) block is a size x size grid whose boxes share their column's
    (left, right) and their row's (top, bottom): overlaps are computed per column and per row
    (a few hundred extents instead of 8732 boxes) and multiplied block by block.
    """

    def __init__(self, dboxes, device, dtype):
        ltrb = dboxes(order="ltrb").to(device=device, dtype=dtype)
        self.xywh = ltrb_to_xywh(ltrb)  # re-derived from ltrb, exactly as the reference does
        self.area = (ltrb[:, 2] - ltrb[:, 0]) * (ltrb[:, 3] - ltrb[:, 1])
        self.rows = torch.arange(len(ltrb), device=device)
        self.blocks, cols, rows, start = [], [], [], 0
        for size, shapes in zip(dboxes.feat_size, dboxes.num_defaults):
            for _ in range(shapes):
                self.blocks.append((start, size, sum(len(c) for c in cols)))
                cols.append(ltrb[start:start + size, 0::2])
                rows.append(ltrb[start:start + size * size:size, 1::2])
                start += size * size
        self.x_lo, self.x_hi = torch.cat(cols).t().contiguous()
        self.y_lo, self.y_hi = torch.cat(rows).t().contiguous()

    def iou(self, boxes):
        """IoU of ``boxes`` [B, G, 4] ltrb with every anchor -> [B, G, A]."""
        left, top, right, bottom = (c[..., None] for c in boxes.unbind(-1))
        iw = (torch.minimum(right, self.x_hi) - torch.maximum(left, self.x_lo)).clamp_(min=0)
        ih = (torch.minimum(bottom, self.y_hi) - torch.maximum(top, self.y_lo)).clamp_(min=0)
        inter = boxes.new_empty(boxes.shape[:-1] + self.area.shape)
        for start, size, off in self.blocks:
            out = inter[..., start:start + size * size].unflatten(-1, (size, size))
            torch.mul(ih[..., off:off + size, None], iw[..., None, off:off + size], out=out)
        union = torch.empty_like(inter)  # out= keeps the broadcast add on the fast kernel path
        torch.add((right - left) * (bottom - top), self.area, out=union)
        return inter.div_(union.sub_(inter))


def ltrb_to_xywh(boxes):
    """[..., 4] ltrb -> centre x, centre y, width, height."""
    return torch.cat(((boxes[..., :2] + boxes[..., 2:]) * 0.5, boxes[..., 2:] - boxes[..., :2]), dim=-1)


def xywh_to_ltrb(boxes):
    """[..., 4] centre x, centre y, width, height -> ltrb."""
    half = 0.5 * boxes[..., 2:]
    return torch.cat((boxes[..., :2] - half, boxes[..., :2] + half), dim=-1)


class Encoder:
    """Turns (boxes, labels) into per-anchor targets and network outputs back into detections."""

    def __init__(self, dboxes):
        self.dboxes = dboxes(order="ltrb")
        self.dboxes_xywh = dboxes(order="xywh")
        self.nboxes = self.dboxes.shape[0]
        self.scale_xy = dboxes.scale_xy
        self.scale_wh = dboxes.scale_wh
        self._default_boxes = dboxes
        self._anchor_cache = {}

    def encode(self, bboxes_in, labels_in, criteria=0.5):
        """One image: ``bboxes_in`` [G, 4] ltrb in [0, 1], ``labels_in`` [G] -> ([8732, 4] xywh, [8732]).

        Every given box takes part in matching, whatever its label (as in the reference).
        """
        if bboxes_in.dim() != 2 or bboxes_in.shape[-1] != 4 or labels_in.shape != bboxes_in.shape[:1]:
            raise UserError(
                f"Encoder.encode: expected boxes [G, 4] and labels [G], got {tuple(bboxes_in.shape)} "
                f"and {tuple(labels_in.shape)}"
            )
        valid = torch.ones(labels_in.shape, dtype=torch.bool, device=labels_in.device)
        boxes, labels = self._match(bboxes_in[None], labels_in[None], valid[None], criteria)
        return boxes[0], labels[0]

    def encode_batch(self, bboxes, labels, criteria=0.5):
        """A padded batch: ``bboxes`` [B, G, 4] ltrb, ``labels`` [B, G] long (0 = padding row).

        Returns ([B, 8732, 4] xywh, [B, 8732] long); row b equals ``encode`` on image b's real boxes.
        """
        if bboxes.dim() != 3 or bboxes.shape[-1] != 4 or labels.shape != bboxes.shape[:2]:
            raise UserError(
                f"Encoder.encode_batch: expected boxes [B, G, 4] and labels [B, G], got "
                f"{tuple(bboxes.shape)} and {tuple(labels.shape)}"
            )
        valid = labels > 0
        step = chunk_items(bboxes.device, bboxes.shape[0], bboxes.shape[1] * self.nboxes, CPU_CHUNK_PAIRS)
        parts = [self._match(bboxes[i:i + step], labels[i:i + step], valid[i:i + step], criteria)
                 for i in range(0, bboxes.shape[0], step)]
        if len(parts) == 1:
            return parts[0]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _anchors(self, device, dtype):
        """The cached ``_Anchors`` for this device and dtype."""
        key = (device, dtype)
        if key not in self._anchor_cache:
            self._anchor_cache[key] = _Anchors(self._default_boxes, device, dtype)
        return self._anchor_cache[key]

    def _match(self, bboxes, labels, valid, criteria):
        """Vectorised matching of a padded batch; padding rows (``valid`` False) never match."""
        anchors = self._anchors(bboxes.device, bboxes.dtype)
        if labels.shape[1] == 0:  # no boxes at all: one padding row keeps the shapes non-empty
            bboxes = bboxes.new_zeros((bboxes.shape[0], 1, 4))
            labels = labels.new_zeros((labels.shape[0], 1))
            valid = valid.new_zeros((valid.shape[0], 1))
        batch, num_gt = labels.shape
        # Padding rows become empty boxes: IoU 0 everywhere, so they never pass ``criteria``.
        ious = anchors.iou(bboxes * valid[..., None])
        best_iou, best_gt = ious.max(dim=1)  # [B, A]: each anchor's best GT (first on ties)
        best_anchor = ious.argmax(dim=2)  # [B, G]: each GT's best anchor (first on ties)

        # Forced positives: the highest GT index that claims an anchor wins it (-1 = unclaimed).
        gt_index = torch.arange(num_gt, device=bboxes.device)
        claims = torch.where(valid, gt_index, -1)
        claimed_by = torch.full((batch, self.nboxes), -1, dtype=torch.long, device=bboxes.device)
        claimed_by.scatter_reduce_(1, best_anchor, claims, reduce="amax")
        forced = claimed_by >= 0
        positive = forced | (best_iou > criteria)

        # One row gather from [all GT boxes of the batch; default boxes]: row b*G+g or B*G+anchor.
        first_row = num_gt * torch.arange(batch, device=bboxes.device)[:, None]
        gt_row = torch.where(forced, claimed_by, best_gt) + first_row
        labels_out = labels.reshape(-1).index_select(0, gt_row.view(-1)).view(batch, -1) * positive
        table = torch.cat((ltrb_to_xywh(bboxes).reshape(-1, 4), anchors.xywh))
        row = torch.where(positive, gt_row, anchors.rows + batch * num_gt)
        return table.index_select(0, row.view(-1)).view(batch, -1, 4), labels_out

    def scale_back_batch(self, bboxes_in, scores_in):
        """Network outputs [N, 4, A] offsets and [N, C, A] logits -> ([N, A, 4] ltrb, [N, A, C] probs)."""
        anchors = self.dboxes_xywh.to(device=bboxes_in.device, dtype=torch.float32)
        offsets = bboxes_in.float().permute(0, 2, 1)
        xy = offsets[..., :2] * self.scale_xy * anchors[:, 2:] + anchors[:, :2]
        wh = (offsets[..., 2:] * self.scale_wh).exp() * anchors[:, 2:]
        boxes = xywh_to_ltrb(torch.cat((xy, wh), dim=-1))
        return boxes, F.softmax(scores_in.float().permute(0, 2, 1), dim=-1)

    def decode_batch(self, bboxes_in, scores_in, criteria=0.45, max_output=200, nms_valid_thresh=0.05):
        """Detections per image: list of (boxes [K, 4] ltrb normalised, labels [K] in 1..C-1, scores [K]).

        Per class (background 0 skipped) the 200 best scores above ``nms_valid_thresh`` go through NMS
        at IoU ``criteria``; the ``max_output`` best survivors of all classes are returned, best first.
        """
        if bboxes_in.dim() != 3 or bboxes_in.shape[1] != 4 or scores_in.dim() != 3 \
                or scores_in.shape[2] != bboxes_in.shape[2] or scores_in.shape[0] != bboxes_in.shape[0]:
            raise UserError(
                f"Encoder.decode_batch: expected ploc [N, 4, A] and plabel [N, C, A], got "
                f"{tuple(bboxes_in.shape)} and {tuple(scores_in.shape)}"
            )
        boxes, probs = self.scale_back_batch(bboxes_in, scores_in)
        batch, num_anchors, num_classes = probs.shape
        # Candidates: per image and class, the top-200 anchors by score (reference's max_num).
        cls_scores = probs[..., 1:].permute(0, 2, 1)  # [N, C-1, A]
        top_scores, top_anchor = cls_scores.topk(min(200, num_anchors), dim=2)
        keep = top_scores > nms_valid_thresh
        image_idx, cls_idx, _ = torch.nonzero(keep, as_tuple=True)
        cand_anchor = top_anchor[keep]
        cand_scores = top_scores[keep]
        cand_boxes = boxes[image_idx, cand_anchor]
        kept = batched_nms(cand_boxes, cand_scores, image_idx * num_classes + cls_idx, criteria)
        kept_image = image_idx[kept]
        out = []
        for i in range(batch):
            sel = kept[kept_image == i][:max_output]
            out.append((cand_boxes[sel], cls_idx[sel] + 1, cand_scores[sel]))
        return out
