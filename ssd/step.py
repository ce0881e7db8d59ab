"""One SSD training step and what it needs: the MLPerf learning-rate schedule, the optimiser
(``--opt``), the model's placement and memory layout, and ``TrainStep`` (encode, forward, loss,
backward, step over a possibly split batch)."""
import contextlib

import torch

from accel.policy import memory_format, sgd_class
from detcore.training.toolbox import set_lr

REFERENCE_BATCH = 32    # the batch the MLPerf learning rate is given for (scaled by batch / 32)


def learning_rate(iteration, base_lr, warmup_iters, warmup_factor, boundaries):
    """MLPerf SSD schedule: linear warm-up ending at ``base_lr``, then x0.1 at each boundary iteration."""
    if iteration < warmup_iters:
        return base_lr - (warmup_iters - iteration) * base_lr / (warmup_iters * 2 ** warmup_factor)
    return base_lr * 0.1 ** sum(iteration >= b for b in boundaries)


def build_optimizer(name, params, lr, weight_decay, device):
    """``--opt``: "sgd" is the reference's SGD (momentum 0.9, weight decay on every parameter;
    Habana's FusedSGD on HPU). "adamw" is torch's AdamW (decoupled ``weight_decay``, default
    betas/eps, the same class on every device): with a frozen backbone its per-parameter step
    sizes cope with the heads' badly scaled curvature (non-negative 3x3x256 inputs) that makes
    SGD either diverge or, clipped, bounce at a loss of ~10 (see docs/ssd_learning.md)."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return sgd_class(device)(params, lr=lr, momentum=0.9, weight_decay=weight_decay)


def place_model(net, device):
    """``net`` on ``device`` in the layout its convolutions run fastest in: channels_last on CPU
    (oneDNN) and CUDA, as YOLOX's trainer; NCHW on HPU (``accel.policy.memory_format``). On the
    2-core Xeon the fp32 SSD step went from 3.25 to 2.91 s (batch 8): an NCHW tensor is reordered
    for oneDNN at every convolution, forward and backward. Same weights, same checkpoints."""
    return net.to(device, memory_format=memory_format(device))


def to_model_input(imgs, device):
    """A batch of images on ``device`` in the layout ``place_model`` gave the network."""
    return imgs.to(device, non_blocking=True).contiguous(memory_format=memory_format(device))


class TrainStep:
    """One optimisation step over a (possibly split) batch: encode, forward, loss, backward, step."""

    def __init__(self, model, loss_fn, encoder, optimizer, precision, device, splits, clip_norm=None):
        self.model, self.loss_fn, self.encoder = model, loss_fn, encoder
        self.optimizer, self.precision, self.device, self.splits = optimizer, precision, device, splits
        self.clip_norm = clip_norm

    def __call__(self, imgs, boxes, labels, lr, encoded=False):
        """``boxes``/``labels``: padded ground truth ([B, G, 4] ltrb, [B, G]), encoded here; or, with
        ``encoded``, per-anchor targets already ([B, 8732, 4] xywh, [B, 8732]), as the loader of
        ``--dl-worker-type HABANA`` delivers them (``ssd.reference_utils.ReferenceBatches``)."""
        set_lr(self.optimizer, lr)
        self.optimizer.zero_grad(set_to_none=True)
        if encoded:
            gloc, glabel = boxes, labels
        else:
            gloc, glabel = self.encoder.encode_batch(boxes, labels)
        gloc = gloc.transpose(1, 2).contiguous()
        total = torch.zeros((), device=self.device)
        chunks = zip(imgs.chunk(self.splits), gloc.chunk(self.splits), glabel.chunk(self.splits))
        for k, (img, loc, lab) in enumerate(chunks):
            last = k == self.splits - 1
            no_sync = getattr(self.model, "no_sync", None)
            with (no_sync() if no_sync and not last else contextlib.nullcontext()):
                with self.precision.autocast():
                    ploc, plabel = self.model(to_model_input(img, self.device))
                loss = self.loss_fn(ploc, plabel, loc.to(self.device, non_blocking=True),
                                    lab.to(self.device, non_blocking=True)) / self.splits
                self.precision.backward(loss)
            total = total + loss.detach()
        self.precision.step(self.optimizer, self.clip_norm)
        return total
