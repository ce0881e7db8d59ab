"""SSD default boxes (anchors), laid out exactly as the MLPerf reference so checkpoints interchange.

Order: feature map, then anchor shape (1:1 at s_k, 1:1 at sqrt(s_k s_k+1), then r and 1/r for each
ratio r), then location row-major (y, then x). This is the order the heads produce when a conv
output ``N x (A*4) x H x W`` is viewed as ``N x 4 x (A*H*W)``.
"""
import math

import torch

from accel.errors import UserError
from detcore.boxes import cxcywh2xyxy


class DefaultBoxes:
    """The fixed anchor set of one SSD configuration, normalised to the image size.

    As in the reference, the ``xywh`` boxes are clamped to [0, 1] and the ``ltrb`` boxes are derived
    from the clamped ``xywh`` ones (so a border anchor's ``ltrb`` may reach slightly outside [0, 1]).
    """

    def __init__(self, fig_size, feat_size, steps, scales, aspect_ratios, scale_xy=0.1, scale_wh=0.2):
        if not (len(feat_size) == len(steps) == len(aspect_ratios) == len(scales) - 1):
            raise UserError(
                "DefaultBoxes: feat_size, steps and aspect_ratios need one entry per feature map "
                f"and scales one more (got {len(feat_size)}, {len(steps)}, {len(aspect_ratios)}, {len(scales)})"
            )
        self.fig_size = fig_size
        self.feat_size = list(feat_size)
        self.steps = list(steps)
        self.scales = list(scales)
        self.aspect_ratios = [list(r) for r in aspect_ratios]
        self.scale_xy = scale_xy
        self.scale_wh = scale_wh

        levels = []
        for idx, size in enumerate(self.feat_size):
            levels.append(self._level(size, fig_size / self.steps[idx], idx))
        self._xywh = torch.cat(levels).clamp_(0.0, 1.0)
        self._ltrb = cxcywh2xyxy(self._xywh)

    def anchor_shapes(self, idx):
        """(w, h) of every anchor shape at feature map ``idx``, in the reference's order."""
        sk1 = self.scales[idx] / self.fig_size
        sk2 = self.scales[idx + 1] / self.fig_size
        sk3 = math.sqrt(sk1 * sk2)
        shapes = [(sk1, sk1), (sk3, sk3)]
        for ratio in self.aspect_ratios[idx]:
            w, h = sk1 * math.sqrt(ratio), sk1 / math.sqrt(ratio)
            shapes += [(w, h), (h, w)]
        return shapes

    def _level(self, size, fk, idx):
        """All anchors of one feature map: [num_shapes * size * size, 4] xywh (unclamped)."""
        centres = (torch.arange(size, dtype=torch.float64) + 0.5) / fk
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")
        cxcy = torch.stack((cx.reshape(-1), cy.reshape(-1)), dim=1)
        shapes = torch.tensor(self.anchor_shapes(idx), dtype=torch.float64)
        wh = shapes[:, None, :].expand(-1, size * size, -1)
        xy = cxcy[None].expand(len(shapes), -1, -1)
        return torch.cat((xy, wh), dim=2).reshape(-1, 4).float()

    @property
    def num_defaults(self):
        """Anchors per location for each feature map (4, 6, 6, 6, 4, 4 for SSD300)."""
        return [2 + 2 * len(r) for r in self.aspect_ratios]

    def __len__(self):
        return self._xywh.shape[0]

    def __call__(self, order="ltrb"):
        if order == "ltrb":
            return self._ltrb
        if order == "xywh":
            return self._xywh
        raise UserError(f"DefaultBoxes: order must be 'ltrb' or 'xywh', got {order!r}")


def dboxes300_coco():
    """The SSD300 anchors of the MLPerf reference: 8732 boxes over 38/19/10/5/3/1 feature maps."""
    return DefaultBoxes(
        300,
        [38, 19, 10, 5, 3, 1],
        [8, 16, 32, 64, 100, 300],
        [21, 45, 99, 153, 207, 261, 315],
        [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
    )
