"""The YOLOX experiment: upstream 0.3.0 defaults and, as upstream, the real model, data,
optimiser, scheduler and evaluator builders as methods (an exp file overriding one sees the code)."""
import math
import random

import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader as TorchDataLoader

from .base_exp import BaseExp

# COCO's class count, the base exp's and exps/default's: a value the data may replace (an exp file
# or a ``num_classes N`` override that sets another is the user's, which the data must match)
DEFAULT_NUM_CLASSES = 80


class Exp(BaseExp):
    """YOLOX-L sized defaults; per-model exps under ``exps/default`` change depth/width/sizes."""

    optional_types = {**BaseExp.optional_types, "cache_dir": str}

    def __init__(self):
        super().__init__()
        # model
        self.num_classes = DEFAULT_NUM_CLASSES
        self.depth = 1.00
        self.width = 1.00
        self.act = "silu"
        # data loader
        self.data_num_workers = 4
        self.input_size = (640, 640)
        self.multiscale_range = 5  # 0 disables multi-scale training
        self.data_dir = None
        self.train_ann = "instances_train2017.json"
        self.val_ann = "instances_val2017.json"
        self.test_ann = "instances_test2017.json"
        # where --cache disk keeps its .npy files (None: img_resized_cache_<images>_<h>x<w> beside
        # the training images; a read-only data set needs one named: ``cache_dir DIR``)
        self.cache_dir = None
        # a training split without a single box stops before the first step (it would learn
        # background only); ``allow_empty_train True`` trains on it anyway
        self.allow_empty_train = False
        # augmentation
        self.mosaic_prob = 1.0
        self.mixup_prob = 1.0
        self.hsv_prob = 1.0
        self.flip_prob = 0.5
        self.degrees = 10.0
        self.translate = 0.1
        self.mosaic_scale = (0.1, 2)
        self.mixup_scale = (0.5, 1.5)
        self.shear = 2.0
        self.enable_mixup = True
        # training
        self.warmup_epochs = 5
        self.max_epoch = 300
        self.warmup_lr = 0.0
        self.min_lr_ratio = 0.05
        self.basic_lr_per_img = 0.01 / 64.0
        self.scheduler = "yoloxwarmcos"
        self.no_aug_epochs = 15
        self.ema = True
        self.weight_decay = 5e-4
        self.momentum = 0.9
        self.print_interval = 10
        self.eval_interval = 10
        self.save_history_ckpt = True
        # also checkpoint every N iterations inside an epoch (0: epoch ends only), keeping the
        # newest ckpt_keep of those iter_NNNNNNNN_ckpt.pth files (detcore.training.checkpoints)
        self.ckpt_interval = 0
        self.ckpt_keep = 2
        self.steps = 0  # stop after this many iterations; 0 = no limit
        # early stopping: stop after `patience` evaluations in a row without improving
        # `best_metric` (0 = off); best_ckpt.pth follows `best_metric` too: "ap50_95", "ap50"
        # (higher is better) or "val_loss" (the validation loss, lower is better)
        self.patience = 0
        self.best_metric = "ap50_95"
        # NHWC conv layout for training on cpu/cuda (not hpu): on the 2-core CPU it made the
        # YOLOX-S step 1.25x faster in fp32 and 1.4x in bf16 (bench/yolox_step.py)
        self.channels_last = True
        # train through torch.compile (same as the CLI's --use-torch-compile)
        self.torch_compile = False
        # fine-tuning on small sets: freeze the (CSP)Darknet backbone, weights and BN statistics
        # (same as tools/train.py --freeze; upstream HEAD's freeze_module(model.backbone.backbone))
        self.freeze_backbone = False
        self.exp_name = "yolox_base"
        # test
        self.test_size = (640, 640)
        self.test_conf = 0.01
        self.nmsthre = 0.65

    def build_model(self):
        """Backbone + head for this exp (overridden by yolox-nano and yolov3)."""
        from yolox.models import YOLOPAFPN, YOLOX, YOLOXHead

        in_channels = [256, 512, 1024]
        backbone = YOLOPAFPN(self.depth, self.width, in_channels=in_channels, act=self.act)
        head = YOLOXHead(self.num_classes, self.width, in_channels=in_channels, act=self.act)
        return YOLOX(backbone, head)

    def get_model(self):
        """A fresh model initialised as released YOLOX: BN eps 1e-3 / momentum 0.03, prior 1e-2;
        with ``freeze_backbone`` its (CSP)Darknet backbone is frozen (the neck and head train)."""
        model = self.build_model()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = 1e-3
                m.momentum = 0.03
        model.head.initialize_biases(1e-2)
        if self.freeze_backbone:
            from yolox.utils import freeze_module
            freeze_module(model.backbone.backbone)
        return model

    # ------------------------------------------------------------------ data
    def _require_data_dir(self):
        from accel.errors import UserError
        if not self.data_dir:
            raise UserError("no data directory: pass --data_dir DIR (or set YOLOX_DATADIR)")
        return self.data_dir

    def _rank_world(self, is_distributed):
        """(rank, world size) of this process, or (0, 1) for a single-process loader."""
        from accel import get_rank, get_world_size
        return (get_rank(), get_world_size()) if is_distributed else (0, 1)

    def _loader_kwargs(self):
        """Workers and pinning; ``self.device`` is set by the trainer (like ``self.model``)."""
        from accel.policy import pin_memory_kwargs
        from accel.preemption import shield_worker
        return {"num_workers": int(self.data_num_workers), "worker_init_fn": shield_worker,
                **pin_memory_kwargs(getattr(self, "device", "cpu"))}

    def data_source(self, split, class_names=None):
        """The ``detcore`` source of ``split`` ('train', 'val', 'test') of ``data_dir``: a COCO
        root (``train_ann`` / ``val_ann`` / ``test_ann`` under annotations/), a VOC devkit or a
        YOLO data.yaml, told apart by ``detcore.data.layout`` alone. A source ``sync_classes`` opened
        is handed over once (the next call for the split reads the files again): the train json
        is parsed once per run, and no source outlives the data set that took it."""
        from detcore.data.layout import open_split

        data_dir = self._require_data_dir()
        opened = self.__dict__.setdefault("_opened_sources", {}).pop((str(data_dir), split), None)
        if opened is not None:
            return opened
        folder, ann = {"train": ("train2017", self.train_ann), "val": ("val2017", self.val_ann),
                       "test": ("test2017", self.test_ann)}[split]
        return open_split(data_dir, split, class_names=class_names, ann_file=ann, img_folder=folder,
                          flag="--data_dir")

    def sync_classes(self, split="train", names=None, where=None):
        """Make ``num_classes`` (and ``class_names``) those of the data, before the model is built.

        Why: a model with another class count than the data trains a whole epoch and then dies in
        evaluation (a class index past the data's categories), losing the epoch. So: when the
        data names K classes and ``num_classes`` is the default (``DEFAULT_NUM_CLASSES``, not set
        by the exp file nor a ``num_classes`` override), the run takes K and the names (one info
        line); when the user set another count, one-line UserError. ``names``: the class names
        when the caller has them (the demo reads a yaml's only), else ``split``'s source is
        opened (and kept for ``get_dataset``). Released 80-class weights with ``-c`` still load
        into the K-class model (every tensor whose shape fits). Returns the names, or None when
        the exp file overrides the split's data method (``get_dataset`` for train, else
        ``get_eval_dataset``): its own data code then owns the classes, in a layout
        ``detcore.data.layout`` may not know.
        """
        from loguru import logger

        from accel.errors import UserError

        method = "get_dataset" if split == "train" else "get_eval_dataset"
        if names is None and getattr(type(self), method) is not getattr(Exp, method):
            return None
        where = where or f"the data {self.data_dir}"
        if names is None:
            source = self.data_source(split)
            self.__dict__.setdefault("_opened_sources", {})[(str(self._require_data_dir()), split)] = source
            names, where = source.class_names, f"the data {source.ann_file}"
        names = tuple(str(n) for n in names)
        self._data_names = names
        if len(names) == self.num_classes:
            if not getattr(self, "class_names", None):
                self.class_names = names
            return names
        overridden = "num_classes" in getattr(self, "_overridden", ())
        if overridden or (self.num_classes != DEFAULT_NUM_CLASSES and not getattr(self, "_classes_from_data", False)):
            by = "a num_classes override" if overridden else "the exp file"
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise UserError(f"num_classes {self.num_classes} (set by {by}) but {where} names "
                            f"{len(names)} classes ({shown}): drop the setting to train on the data's "
                            f"{len(names)}, or use data with {self.num_classes} classes")
        if getattr(self, "model", None) is not None:
            raise UserError(f"{where} names {len(names)} classes but the model was built with "
                            f"{self.num_classes}: exp.sync_classes() must run before exp.get_model()")
        logger.info(f"num_classes {len(names)} from {where} (instead of the default "
                    f"{DEFAULT_NUM_CLASSES}): {', '.join(names)}")
        self.num_classes, self.class_names, self._classes_from_data = len(names), names, True
        return names

    def get_dataset(self, cache=False):
        """The training set (any layout ``data_source`` reads) with the single-image transform
        (mosaic wraps it); its class count must be the model's (``sync_classes``), checked here
        before the first step rather than in the first evaluation. ``cache``: None/False, 'ram'
        (or True) or 'disk' (``--cache``; disk files under ``cache_dir``)."""
        from yolox.data import TrainTransform
        from yolox.data.datasets import SourceDataset

        self.sync_classes("train")
        return SourceDataset(self.data_source("train"), img_size=self.input_size,
                             preproc=TrainTransform(max_labels=50, flip_prob=self.flip_prob,
                                                    hsv_prob=self.hsv_prob),
                             cache=cache, cache_dir=self.cache_dir)

    def get_data_loader(self, batch_size, is_distributed, no_aug=False, cache_img=False):
        """Infinite mosaic/mixup training loader; ``batch_size`` is the total over all ranks.
        ``cache_img``: the ``--cache`` value (None, 'ram' or 'disk'; True means 'ram').

        The sampler's position is part of the loader state (``state_dict``), so a resumed run
        continues with the exact next batch.
        """
        from yolox.data import (DataLoader, InfiniteSampler, MosaicDetection, TrainTransform,
                                YoloBatchSampler, worker_init_reset_seed)

        dataset = MosaicDetection(self.get_dataset(cache=cache_img), img_size=self.input_size,
                                  mosaic=not no_aug,
                                  preproc=TrainTransform(max_labels=120, flip_prob=self.flip_prob,
                                                         hsv_prob=self.hsv_prob),
                                  degrees=self.degrees, translate=self.translate,
                                  mosaic_scale=self.mosaic_scale, mixup_scale=self.mixup_scale,
                                  shear=self.shear, enable_mixup=self.enable_mixup,
                                  mosaic_prob=self.mosaic_prob, mixup_prob=self.mixup_prob)
        rank, world = self._rank_world(is_distributed)
        sampler = InfiniteSampler(len(dataset), shuffle=True, seed=self.seed or 0, rank=rank,
                                  world_size=world)
        batch_sampler = YoloBatchSampler(sampler=sampler, batch_size=max(batch_size // world, 1),
                                         drop_last=False, mosaic=not no_aug)
        kwargs = self._loader_kwargs()
        if kwargs["num_workers"] > 0:
            kwargs["persistent_workers"] = True   # no re-forking (and re-caching) every epoch
        kwargs["worker_init_fn"] = worker_init_reset_seed     # shields the worker too
        loader = DataLoader(dataset, batch_sampler=batch_sampler, **kwargs)
        # an infinite sampler has no natural epoch: one epoch = one pass over the data set
        loader.iters_per_epoch = max(math.ceil(len(dataset) / max(batch_size, 1)), 1)
        return loader

    def random_resize(self, data_loader, epoch, rank, is_distributed):
        """Pick the next multi-scale input size on rank 0 and share it, so all ranks agree."""
        from accel import broadcast_object
        size = None
        if rank == 0:
            base = self.input_size[0] // 32
            lo, hi = max(base - self.multiscale_range, 1), base + self.multiscale_range
            if getattr(self, "random_size", None) is not None:
                lo, hi = self.random_size
            factor = self.input_size[1] / self.input_size[0]
            s = random.randint(lo, hi)
            size = (32 * s, 32 * int(s * factor))
        if is_distributed:
            size = broadcast_object(size, src=0)
        return tuple(size)

    def preprocess(self, inputs, targets, tsize):
        """Resize a batch to the multi-scale size ``tsize`` and scale its (cls,cx,cy,w,h) targets."""
        scale_y = tsize[0] / inputs.shape[-2]
        scale_x = tsize[1] / inputs.shape[-1]
        if scale_x != 1 or scale_y != 1:
            inputs = F.interpolate(inputs, size=tuple(tsize), mode="bilinear", align_corners=False)
            targets = targets.clone()
            targets[..., 1::2] *= scale_x
            targets[..., 2::2] *= scale_y
        return inputs, targets

    # ------------------------------------------------------------------ optimisation
    def get_optimizer(self, batch_size):
        """SGD (nesterov) with weight decay on conv/linear weights only, as upstream YOLOX."""
        model = getattr(self, "model", None)
        if model is None:
            raise RuntimeError("exp.get_optimizer needs exp.model (set by the trainer after get_model)")
        lr = self.warmup_lr if self.warmup_epochs > 0 else self.basic_lr_per_img * batch_size
        no_decay, decay, biases = param_groups(model)
        from accel.policy import sgd_class
        # Habana's FusedSGD on HPU, torch's SGD elsewhere (the device is set by the trainer)
        sgd = sgd_class(getattr(self, "device", "cpu"))
        optimizer = sgd(no_decay, lr=lr, momentum=self.momentum, nesterov=True)
        optimizer.add_param_group({"params": decay, "weight_decay": self.weight_decay})
        optimizer.add_param_group({"params": biases})
        return optimizer

    def get_lr_scheduler(self, lr, iters_per_epoch):
        from yolox.core.lr_scheduler import LRScheduler
        return LRScheduler(self.scheduler, lr, iters_per_epoch, self.max_epoch,
                           warmup_epochs=self.warmup_epochs, warmup_lr_start=self.warmup_lr,
                           no_aug_epochs=self.no_aug_epochs, min_lr_ratio=self.min_lr_ratio)

    # ------------------------------------------------------------------ evaluation
    def get_eval_dataset(self, testdev=False, legacy=False):
        """The val (or test) split of any layout; VOC's takes the train split's class names
        when ``sync_classes`` read them (its classes are inferred from the xmls)."""
        from yolox.data import ValTransform
        from yolox.data.datasets import SourceDataset
        source = self.data_source("test" if testdev else "val",
                                  class_names=getattr(self, "_data_names", None))
        return SourceDataset(source, img_size=self.test_size, preproc=ValTransform(legacy=legacy))

    def get_eval_loader(self, batch_size, is_distributed, testdev=False, legacy=False):
        dataset = self.get_eval_dataset(testdev, legacy)
        rank, world = self._rank_world(is_distributed)
        # every world-th image from rank: each is evaluated exactly once overall (a
        # DistributedSampler pads with repeats, which would double-count detections)
        sampler = range(rank, len(dataset), world)
        return TorchDataLoader(dataset, batch_size=max(batch_size // world, 1), sampler=sampler,
                               **self._loader_kwargs())

    def get_evaluator(self, batch_size, is_distributed, testdev=False, legacy=False):
        from yolox.evaluators import COCOEvaluator
        return COCOEvaluator(dataloader=self.get_eval_loader(batch_size, is_distributed, testdev, legacy),
                             img_size=self.test_size, confthre=self.test_conf, nmsthre=self.nmsthre,
                             num_classes=self.num_classes, testdev=testdev)

    def get_trainer(self, args=None, **options):
        """The Trainer for this exp: tools/train.py passes its parsed flags, Python callers plain
        keywords (``exp.get_trainer(batch_size=8, device="cpu")``)."""
        from yolox.core.trainer import Trainer
        return Trainer(self, args, **options)

    def eval(self, model, evaluator, is_distributed, half=False, return_outputs=False):
        return evaluator.evaluate(model, is_distributed, half, return_outputs=return_outputs)


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
