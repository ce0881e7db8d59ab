"""Training/eval plumbing that ``Exp`` delegates to (same names as upstream Exp methods).

Each function takes the experiment as its first argument so the Exp class stays a plain config
holder and the heavy imports (data, evaluator, trainer) happen only when a run needs them.
"""
import math
import random

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader as TorchDataLoader

from accel import broadcast_object, dist_env


def _require_data_dir(exp):
    from accel.errors import UserError
    if not exp.data_dir:
        raise UserError("no data directory: pass --data_dir DIR (or set YOLOX_DATADIR)")
    return exp.data_dir


def _rank_world(is_distributed):
    """(rank, world size) of this process, or (0, 1) for a single-process loader."""
    info = dist_env()
    return (info.rank, info.world_size) if is_distributed else (0, 1)


def _loader_kwargs(exp):
    workers = int(exp.data_num_workers)
    kwargs = {"num_workers": workers, "pin_memory": torch.cuda.is_available()}
    if workers > 0:
        # keeping workers alive avoids re-forking (and re-caching) every epoch
        kwargs["persistent_workers"] = True
    return kwargs


def get_data_loader(exp, batch_size, is_distributed, no_aug=False, cache_img=False):
    """Infinite mosaic/mixup training loader; ``batch_size`` is the total over all ranks."""
    from yolox.data import (COCODataset, DataLoader, InfiniteSampler, MosaicDetection,
                            TrainTransform, YoloBatchSampler, worker_init_reset_seed)

    dataset = COCODataset(data_dir=_require_data_dir(exp), json_file=exp.train_ann, name="train2017",
                          img_size=exp.input_size,
                          preproc=TrainTransform(max_labels=50, flip_prob=exp.flip_prob,
                                                 hsv_prob=exp.hsv_prob),
                          cache=cache_img)
    dataset = MosaicDetection(dataset, img_size=exp.input_size, mosaic=not no_aug,
                              preproc=TrainTransform(max_labels=120, flip_prob=exp.flip_prob,
                                                     hsv_prob=exp.hsv_prob),
                              degrees=exp.degrees, translate=exp.translate,
                              mosaic_scale=exp.mosaic_scale, mixup_scale=exp.mixup_scale,
                              shear=exp.shear, enable_mixup=exp.enable_mixup,
                              mosaic_prob=exp.mosaic_prob, mixup_prob=exp.mixup_prob)
    rank, world = _rank_world(is_distributed)
    sampler = InfiniteSampler(len(dataset), shuffle=True, seed=exp.seed or 0, rank=rank,
                              world_size=world)
    batch_sampler = YoloBatchSampler(sampler=sampler, batch_size=max(batch_size // world, 1),
                                     drop_last=False, mosaic=not no_aug)
    loader = DataLoader(dataset, batch_sampler=batch_sampler, worker_init_fn=worker_init_reset_seed,
                        **_loader_kwargs(exp))
    # an infinite sampler has no natural epoch: one epoch = one pass over the data set
    loader.iters_per_epoch = max(math.ceil(len(dataset) / max(batch_size, 1)), 1)
    return loader


def random_resize(exp, data_loader, epoch, rank, is_distributed):
    """Pick the next multi-scale input size on rank 0 and share it, so all ranks agree."""
    size = None
    if rank == 0:
        base = exp.input_size[0] // 32
        lo, hi = max(base - exp.multiscale_range, 1), base + exp.multiscale_range
        if getattr(exp, "random_size", None) is not None:
            lo, hi = exp.random_size
        factor = exp.input_size[1] / exp.input_size[0]
        s = random.randint(lo, hi)
        size = (32 * s, 32 * int(s * factor))
    if is_distributed:
        size = broadcast_object(size, src=0)
    return tuple(size)


def preprocess(exp, inputs, targets, tsize):
    """Resize a batch to the multi-scale size ``tsize`` and scale its (cls,cx,cy,w,h) targets."""
    scale_y = tsize[0] / inputs.shape[-2]
    scale_x = tsize[1] / inputs.shape[-1]
    if scale_x != 1 or scale_y != 1:
        inputs = F.interpolate(inputs, size=tuple(tsize), mode="bilinear", align_corners=False)
        targets = targets.clone()
        targets[..., 1::2] *= scale_x
        targets[..., 2::2] *= scale_y
    return inputs, targets


def param_groups(model):
    """Split parameters: BN weights (no decay), conv/linear weights (decay), biases (no decay)."""
    no_decay, decay, biases = [], [], []
    for name, module in model.named_modules():
        if isinstance(getattr(module, "bias", None), nn.Parameter):
            biases.append(module.bias)
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter):
            continue
        if isinstance(module, nn.modules.batchnorm._NormBase) or "bn" in name.split(".")[-1]:
            no_decay.append(weight)
        else:
            decay.append(weight)
    return no_decay, decay, biases


def get_optimizer(exp, batch_size):
    """SGD (nesterov) with weight decay on conv/linear weights only, as upstream YOLOX."""
    model = getattr(exp, "model", None)
    if model is None:
        raise RuntimeError("exp.get_optimizer needs exp.model (set by the trainer after get_model)")
    lr = exp.warmup_lr if exp.warmup_epochs > 0 else exp.basic_lr_per_img * batch_size
    no_decay, decay, biases = param_groups(model)
    optimizer = torch.optim.SGD(no_decay, lr=lr, momentum=exp.momentum, nesterov=True)
    optimizer.add_param_group({"params": decay, "weight_decay": exp.weight_decay})
    optimizer.add_param_group({"params": biases})
    return optimizer


def get_lr_scheduler(exp, lr, iters_per_epoch):
    from yolox.core.lr_scheduler import LRScheduler
    return LRScheduler(exp.scheduler, lr, iters_per_epoch, exp.max_epoch,
                       warmup_epochs=exp.warmup_epochs, warmup_lr_start=exp.warmup_lr,
                       no_aug_epochs=exp.no_aug_epochs, min_lr_ratio=exp.min_lr_ratio)


def get_eval_loader(exp, batch_size, is_distributed, testdev=False, legacy=False):
    from yolox.data import COCODataset, ValTransform

    dataset = COCODataset(data_dir=_require_data_dir(exp),
                          json_file=exp.test_ann if testdev else exp.val_ann,
                          name="test2017" if testdev else "val2017",
                          img_size=exp.test_size, preproc=ValTransform(legacy=legacy))
    rank, world = _rank_world(is_distributed)
    # every world-th image from rank: each is evaluated exactly once overall (DistributedSampler
    # pads with repeats, which would double-count detections)
    sampler = range(rank, len(dataset), world)
    kwargs = _loader_kwargs(exp)
    kwargs.pop("persistent_workers", None)   # eval loaders are short-lived
    return TorchDataLoader(dataset, batch_size=max(batch_size // world, 1), sampler=sampler, **kwargs)


def get_evaluator(exp, batch_size, is_distributed, testdev=False, legacy=False):
    from yolox.evaluators import COCOEvaluator
    return COCOEvaluator(dataloader=get_eval_loader(exp, batch_size, is_distributed, testdev, legacy),
                         img_size=exp.test_size, confthre=exp.test_conf, nmsthre=exp.nmsthre,
                         num_classes=exp.num_classes, testdev=testdev)


def get_trainer(exp, args):
    from yolox.core.trainer import Trainer
    return Trainer(exp, args)


def eval(exp, model, evaluator, is_distributed, half=False, return_outputs=False):  # noqa: A001
    return evaluator.evaluate(model, is_distributed, half, return_outputs=return_outputs)
