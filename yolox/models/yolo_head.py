"""Decoupled YOLOX head: per-level stems, separate cls / reg branches, grid decoding, loss call."""
import math

import torch
from torch import nn

from accel.policy import loss_device, script_loss
from accel.precision import fp32_region

from .network_blocks import BaseConv, DWConv
from .yolo_loss import get_loss_fn


MAX_LOG_SIZE = 20.0


class YOLOXHead(nn.Module):
    """Anchor-free head over strides 8/16/32.

    Train mode returns the loss dict (the SimOTA loss lives in ``yolo_loss``); eval mode returns
    ``[B, A, 5 + C]`` = (cx, cy, w, h in pixels, sigmoid obj, sigmoid cls), or the raw undecoded
    map when ``decode_in_inference`` is False (what the exports emit unless ``--decode_in_inference``);
    eval mode with targets returns both (``predict_with_loss``: the evaluator's validation loss).
    """

    def __init__(self, num_classes, width=1.0, strides=(8, 16, 32), in_channels=(256, 512, 1024),
                 act="silu", depthwise=False):
        super().__init__()
        self.num_classes = num_classes
        self.n_anchors = 1
        self.strides = tuple(strides)
        self.decode_in_inference = True
        self.use_l1 = False
        Conv = DWConv if depthwise else BaseConv
        hidden = int(256 * width)
        # Registration order fixes the state-dict order; it follows upstream.
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        self.cls_preds = nn.ModuleList()
        self.reg_preds = nn.ModuleList()
        self.obj_preds = nn.ModuleList()
        self.stems = nn.ModuleList()
        for in_ch in in_channels:
            self.stems.append(BaseConv(int(in_ch * width), hidden, 1, 1, act=act))
            for branch in (self.cls_convs, self.reg_convs):
                branch.append(nn.Sequential(Conv(hidden, hidden, 3, 1, act=act), Conv(hidden, hidden, 3, 1, act=act)))
            self.cls_preds.append(nn.Conv2d(hidden, self.n_anchors * num_classes, 1, 1, 0))
            self.reg_preds.append(nn.Conv2d(hidden, 4, 1, 1, 0))
            self.obj_preds.append(nn.Conv2d(hidden, self.n_anchors, 1, 1, 0))

    def initialize_biases(self, prior_prob):
        """Start cls/obj at sigmoid = prior_prob so early training is not swamped by negatives."""
        value = -math.log((1 - prior_prob) / prior_prob)
        with torch.no_grad():
            for conv in list(self.cls_preds) + list(self.obj_preds):
                conv.bias.fill_(value)

    def _raw_outputs(self, xin):
        """Per-level conv outputs flattened to ``[B, A, 5 + C]`` (reg, obj logit, cls logits).

        Channels go last before flattening (upstream flattens, concatenates, then permutes): the
        same values, but on channels_last maps that is a view instead of a copy per level, and the
        result is contiguous for the decode and loss that read it."""
        outputs, shapes = [], []
        for k, x in enumerate(xin):
            x = self.stems[k](x)
            reg_feat = self.reg_convs[k](x)
            out = torch.cat([self.reg_preds[k](reg_feat), self.obj_preds[k](reg_feat),
                             self.cls_preds[k](self.cls_convs[k](x))], dim=1)
            shapes.append(out.shape[-2:])
            outputs.append(out.permute(0, 2, 3, 1).flatten(1, 2))
        return torch.cat(outputs, dim=1), shapes

    def grids_and_strides(self, shapes, dtype, device):
        """Anchor grid ``[A, 2]`` (x, y cell index) and stride ``[A]``, level order as the outputs."""
        grids, strides = [], []
        for (h, w), stride in zip(shapes, self.strides):
            h, w = int(h), int(w)
            yv, xv = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
            grids.append(torch.stack((xv, yv), dim=2).reshape(-1, 2))
            strides.append(torch.full((h * w,), stride, device=device))
        return torch.cat(grids).to(dtype), torch.cat(strides).to(dtype)

    @staticmethod
    def decode(raw, grids, strides):
        """Box decoding: centre = (offset + grid) * stride, size = exp(log-size) * stride.

        The log-size is capped at MAX_LOG_SIZE (e^20 strides, far beyond any image) so a
        diverging model cannot decode infinite boxes; trained outputs are never near the cap.
        One ``split`` rather than three slices: its backward writes the parts' gradients into one
        tensor, where each slice's backward fills a zero tensor of the whole output's size.
        """
        s = strides.unsqueeze(-1)
        xy, log_wh, rest = raw.split((2, 2, raw.shape[-1] - 4), dim=-1)
        size = torch.exp(log_wh.clamp(max=MAX_LOG_SIZE)) * s
        return torch.cat([(xy + grids) * s, size, rest], dim=-1)

    def forward(self, xin, labels=None):
        raw, shapes = self._raw_outputs(xin)
        # Decode (and compute the loss) in fp32 even under autocast: bf16 would quantise pixel
        # coordinates to ~4 px at 640 and skew the assignment's IoU costs.
        raw = raw.float()
        if self.training:
            if labels is None:
                raise ValueError("YOLOXHead in train mode needs targets [B, max_labels, 5]")
            grids, strides = self.grids_and_strides(shapes, raw.dtype, raw.device)
            return self.losses(self.decode(raw, grids, strides), raw[..., :4], grids, strides, labels)
        preds = torch.cat([raw[..., :4], raw[..., 4:].sigmoid()], dim=-1)
        if labels is not None:
            return self.predict_with_loss(raw, preds, shapes, labels)
        if not self.decode_in_inference:
            return preds
        grids, strides = self.grids_and_strides(shapes, raw.dtype, raw.device)
        return self.decode(preds, grids, strides)

    def predict_with_loss(self, raw, preds, shapes, labels):
        """Eval mode given targets (the evaluator's validation loss): ``(predictions, loss dict)``
        of ONE forward, so the val loss costs no second pass over the val set and sees the
        batch-norm statistics the detections see (eval mode). The loss is the training loss
        (same terms, same ``use_l1``) of the raw outputs; the predictions are those of a call
        without targets (decoding touches only the 4 box channels, so decoding the raw map once
        and applying the sigmoid after equals decoding the sigmoided one)."""
        grids, strides = self.grids_and_strides(shapes, raw.dtype, raw.device)
        decoded = self.decode(raw, grids, strides)
        losses = self.losses(decoded, raw[..., :4], grids, strides, labels)
        if self.decode_in_inference:
            preds = torch.cat([decoded[..., :4], decoded[..., 4:].sigmoid()], dim=-1)
        return preds, losses

    def losses(self, outputs, origin_preds, grids, strides, labels):
        """Call the SimOTA loss in fp32, where ``accel.policy`` says it runs.

        On HPU that is the host, as TorchScript (Habana's recipe: the data-dependent shapes of
        the assignment compile poorly on the device); ``.to()`` is differentiable, so gradients
        flow back, and it is a no-op where the loss runs on the model's own device.
        """
        device = outputs.device
        host = loss_device(device)
        loss_fn = get_loss_fn(scripted=script_loss(device))
        args = tuple(t.to(host) for t in (outputs, origin_preds, grids, strides, labels.float()))
        with fp32_region(host):
            values = loss_fn(*args, self.num_classes, self.use_l1)
        names = ("total_loss", "iou_loss", "conf_loss", "cls_loss", "l1_loss", "num_fg")
        return {name: value.to(device) for name, value in zip(names, values)}
