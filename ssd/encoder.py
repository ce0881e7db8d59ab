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

# GT-anchor pairs per CPU chunk: 16 MiB of float32 IoU per buffer. Fewer chunks save each chunk's
# ~40 small ops (at 50 boxes 4M pairs beat 2M by ~10%), but a buffer must stay under glibc's 32 MiB
# cap on its mmap threshold: above it every call maps and faults fresh memory (8M pairs: 1.5-2x slower).
CPU_CHUNK_PAIRS = 1 << 22


class _Anchors:
    """Default boxes on one device, plus the grid structure they are laid out on.

    Each (feature map, anchor shape) block is a size x size grid whose boxes share their column's
    (left, right) and their row's (top, bottom): overlaps are computed per column and per row
    (a few hundred extents instead of 8732 boxes) and multiplied one feature map at a time (its
    shapes' blocks lie one after another, so six products cover all 8732 anchors).
    """

    def __init__(self, dboxes, device, dtype):
        ltrb = dboxes(order="ltrb").to(device=device, dtype=dtype)
        self.xywh = ltrb_to_xywh(ltrb)  # re-derived from ltrb, exactly as the reference does
        self.area = (ltrb[:, 2] - ltrb[:, 0]) * (ltrb[:, 3] - ltrb[:, 1])
        # runs for first_argmax: the longest that divide A into at least 32 (236 x 37 for 8732);
        # torch's innermost reduction pays per output, so 37 runs of 236 beat 118 runs of 74 by ~4%
        self.block = max(d for d in range(1, len(ltrb) // 32 + 1) if len(ltrb) % d == 0)
        self.maps, cols, rows, start = [], [], [], 0
        for size, shapes in zip(dboxes.feat_size, dboxes.num_defaults):
            self.maps.append((start, shapes, size, sum(len(c) for c in cols)))
            for _ in range(shapes):
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
        for start, shapes, size, off in self.maps:
            out = inter[..., start:start + shapes * size * size].unflatten(-1, (shapes, size, size))
            extents = slice(off, off + shapes * size)
            torch.mul(ih[..., extents].unflatten(-1, (shapes, size, 1)),
                      iw[..., extents].unflatten(-1, (shapes, 1, size)), out=out)
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


def first_argmax(x, block):
    """``x.argmax(-1)`` (first index on ties) through value-only reductions: the maximum of each
    run of ``block`` elements, the first run reaching the row's maximum, then the first index
    inside that run. Equal to argmax because the first maximal element lies in the first maximal
    run; ~4x faster than argmax over SSD's 8732 anchors on CPU (``block`` 236 divides 8732)."""
    runs = x.unflatten(-1, (-1, block))
    run = runs.amax(-1).argmax(-1, keepdim=True)
    inside = runs.gather(-2, run[..., None].expand(run.shape + (block,))).squeeze(-2).argmax(-1)
    return run.squeeze(-1) * block + inside


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
        boxes, labels = self._encode(bboxes_in[None], labels_in[None], valid[None], criteria)
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
        return self._encode(bboxes, labels, labels > 0, criteria)

    def _anchors(self, device, dtype):
        """The cached ``_Anchors`` for this device and dtype."""
        key = (device, dtype)
        if key not in self._anchor_cache:
            self._anchor_cache[key] = _Anchors(self._default_boxes, device, dtype)
        return self._anchor_cache[key]

    def _encode(self, bboxes, labels, valid, criteria):
        """Matching chunk by chunk, then the outputs: every anchor starts as its default box with
        label 0 (a broadcast copy) and only the positives are written over with their GT's box and
        label. Gathering all B x 8732 rows from a [GT rows; default rows] table instead cost 2-3x
        the copy on CPU and was ~35% of a 1-box batch. Padding rows (``valid`` False) never match."""
        anchors = self._anchors(bboxes.device, bboxes.dtype)
        if labels.shape[1] == 0:  # no boxes at all: one padding row keeps the shapes non-empty
            bboxes = bboxes.new_zeros((bboxes.shape[0], 1, 4))
            labels = labels.new_zeros((labels.shape[0], 1))
            valid = valid.new_zeros((valid.shape[0], 1))
        batch, num_gt = labels.shape
        masked = bboxes * valid[..., None]  # padding rows become empty boxes: IoU 0 everywhere
        positive = torch.empty((batch, self.nboxes), dtype=torch.bool, device=bboxes.device)
        best_gt = torch.empty((batch, self.nboxes), dtype=torch.int32, device=bboxes.device)
        step = chunk_items(bboxes.device, batch, num_gt * self.nboxes, CPU_CHUNK_PAIRS)
        for i in range(0, batch, step):
            self._match(anchors, masked[i:i + step], valid[i:i + step], criteria,
                        positive[i:i + step], best_gt[i:i + step])
        # (image, anchor) of each positive as one flat index, and its GT's row in [B * G] tables
        flat = positive.view(-1).nonzero().squeeze(1)
        image = torch.div(flat, self.nboxes, rounding_mode="floor")
        gt_row = best_gt.view(-1).index_select(0, flat) + image * num_gt
        # a copy, never a view of the cached anchors (expand + contiguous is one for a batch of 1)
        boxes_out = anchors.xywh.expand(batch, -1, -1).clone(memory_format=torch.contiguous_format)
        boxes_out.view(-1, 4).index_copy_(0, flat, ltrb_to_xywh(bboxes).reshape(-1, 4).index_select(0, gt_row))
        labels_out = labels.new_zeros((batch, self.nboxes))
        labels_out.view(-1).index_copy_(0, flat, labels.reshape(-1).index_select(0, gt_row))
        return boxes_out, labels_out

    def _match(self, anchors, bboxes, valid, criteria, positive, best_gt):
        """Fills ``positive`` [b, A] (the anchor gets a GT's box and label) and ``best_gt`` [b, A]
        (which GT of its image; meaningful only where positive) for a chunk of images."""
        num_gt = valid.shape[1]
        ious = anchors.iou(bboxes)
        # Each anchor's best GT (first on ties) matters only where it becomes a positive; torch's
        # index-returning reductions run ~10x slower than value-only ones on CPU, so the full
        # [B, G, A] passes are value-only and indices are found on the few anchors that need them
        # (``nonzero`` is a host sync on an accelerator; training encodes the loader's CPU tensors).
        best_iou = ious[:, 0] if num_gt == 1 else ious.amax(dim=1)
        torch.gt(best_iou, criteria, out=positive)
        best_gt.zero_()
        if num_gt > 1:
            img, anchor = positive.nonzero(as_tuple=True)
            best_gt[img, anchor] = ious[img, :, anchor].argmax(dim=1).to(torch.int32)
        best_anchor = first_argmax(ious, anchors.block)  # [B, G]: each GT's best anchor (first on ties)

        # Forced positives: each valid GT claims its best anchor and, of several claiming one, the
        # highest index wins (the reference's sequential loop). Every GT writes its anchor's final
        # value (the winner, or what is there already if no valid GT claims it), so scatter's order
        # among duplicate indices cannot matter.
        same = (best_anchor[:, :, None] == best_anchor[:, None, :]) & valid[:, None, :]
        gt_index = torch.arange(num_gt, dtype=torch.int32, device=bboxes.device)
        claim = torch.where(same, gt_index, -1).amax(dim=2)  # [B, G]
        claimed = claim >= 0
        best_gt.scatter_(1, best_anchor, torch.where(claimed, claim, best_gt.gather(1, best_anchor)))
        positive.scatter_(1, best_anchor, claimed | positive.gather(1, best_anchor))

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
