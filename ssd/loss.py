"""SSD training loss: Smooth-L1 on positives + softmax CE with 3:1 hard negative mining.

Written with mask multiplications and a sort-based rank only (no boolean-mask ``index_put_`` and
no data-dependent shapes), which is what the HPU recipe needs to keep the graph static.
"""
import torch
import torch.nn.functional as F
from torch import nn

NEG_POS_RATIO = 3


class Loss(nn.Module):
    """``Loss(dboxes)(ploc, plabel, gloc, glabel)`` -> scalar, as in the MLPerf reference.

    ploc [N, 4, A] predicted offsets, plabel [N, C, A] logits, gloc [N, 4, A] xywh target boxes
    (the encoder's output, transposed), glabel [N, A] long. Each image's sum is divided by its
    positive count; images without positives contribute 0; the result is the batch mean.
    """

    def __init__(self, dboxes):
        super().__init__()
        self.scale_xy = 1.0 / dboxes.scale_xy
        self.scale_wh = 1.0 / dboxes.scale_wh
        self.register_buffer("dboxes", dboxes(order="xywh").t().unsqueeze(0).clone(), persistent=False)

    def _loc_vec(self, gloc):
        """Target xywh boxes -> the offsets the network regresses (variances 0.1 / 0.2)."""
        anchors = self.dboxes
        gxy = self.scale_xy * (gloc[:, :2] - anchors[:, :2]) / anchors[:, 2:]
        gwh = self.scale_wh * (gloc[:, 2:] / anchors[:, 2:]).log()
        return torch.cat((gxy, gwh), dim=1)

    def _sums(self, ploc, plabel, gloc, glabel):
        """Per image: (Smooth-L1 sum over positives, mined CE sum, positive count), each [N]."""
        pos = (glabel > 0).float()  # [N, A]
        pos_num = pos.sum(dim=1)  # [N]

        loc_target = self._loc_vec(gloc.float())
        sl1 = F.smooth_l1_loss(ploc.float(), loc_target, reduction="none").sum(dim=1)  # [N, A]
        loc_loss = (sl1 * pos).sum(dim=1)

        con = F.cross_entropy(plabel.float(), glabel, reduction="none")  # [N, A]
        # Rank negatives by loss (positives pushed last), keep the top 3 * positives.
        neg_key = (con.detach() * (1.0 - pos)) - pos
        order = neg_key.argsort(dim=1, descending=True, stable=True)
        rank = order.argsort(dim=1)
        neg_num = torch.clamp(NEG_POS_RATIO * pos_num, max=con.shape[1]).unsqueeze(1)
        neg = (rank < neg_num).float() * (1.0 - pos)
        con_loss = (con * (pos + neg)).sum(dim=1)
        return loc_loss, con_loss, pos_num

    def forward(self, ploc, plabel, gloc, glabel):
        loc_loss, con_loss, pos_num = self._sums(ploc, plabel, gloc, glabel)
        has_pos = (pos_num > 0).float()
        return ((loc_loss + con_loss) * has_pos / pos_num.clamp(min=1e-6)).mean(dim=0)

    def terms(self, ploc, plabel, gloc, glabel):
        """The two parts of ``forward``'s loss, for the validation loss's report: a dict of
        batch means ``loc_loss`` (Smooth-L1) and ``conf_loss`` (mined CE), each normalised per
        image as ``forward`` (their sum equals it up to float rounding), and ``loss`` = that sum."""
        loc_loss, con_loss, pos_num = self._sums(ploc, plabel, gloc, glabel)
        scale = (pos_num > 0).float() / pos_num.clamp(min=1e-6)
        loc, conf = (loc_loss * scale).mean(dim=0), (con_loss * scale).mean(dim=0)
        return {"loss": loc + conf, "loc_loss": loc, "conf_loss": conf}
