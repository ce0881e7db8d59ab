"""The YOLOX experiment: upstream 0.3.0 defaults, model construction, builders delegation."""
from torch import nn

from .base_exp import BaseExp


class Exp(BaseExp):
    """YOLOX-L sized defaults; per-model exps under ``exps/default`` change depth/width/sizes."""

    def __init__(self):
        super().__init__()
        # model
        self.num_classes = 80
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
        self.steps = 0  # stop after this many iterations; 0 = no limit
        # NHWC conv layout for training on cpu/cuda (not hpu): on the 2-core CPU it made the
        # YOLOX-S step 1.25x faster in fp32 and 1.4x in bf16 (bench/yolox_step.py)
        self.channels_last = True
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
        """A fresh model initialised as released YOLOX: BN eps 1e-3 / momentum 0.03, prior 1e-2."""
        model = self.build_model()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = 1e-3
                m.momentum = 0.03
        model.head.initialize_biases(1e-2)
        return model

    # The data, optimisation and evaluation pieces live in yolox.core.builders; these keep the
    # upstream ``exp.get_xxx(...)`` call sites working.
    def get_data_loader(self, batch_size, is_distributed, no_aug=False, cache_img=False):
        from yolox.core import builders
        return builders.get_data_loader(self, batch_size, is_distributed, no_aug, cache_img)

    def random_resize(self, data_loader, epoch, rank, is_distributed):
        from yolox.core import builders
        return builders.random_resize(self, data_loader, epoch, rank, is_distributed)

    def preprocess(self, inputs, targets, tsize):
        from yolox.core import builders
        return builders.preprocess(self, inputs, targets, tsize)

    def get_optimizer(self, batch_size):
        from yolox.core import builders
        return builders.get_optimizer(self, batch_size)

    def get_lr_scheduler(self, lr, iters_per_epoch):
        from yolox.core import builders
        return builders.get_lr_scheduler(self, lr, iters_per_epoch)

    def get_eval_loader(self, batch_size, is_distributed, testdev=False, legacy=False):
        from yolox.core import builders
        return builders.get_eval_loader(self, batch_size, is_distributed, testdev, legacy)

    def get_evaluator(self, batch_size, is_distributed, testdev=False, legacy=False):
        from yolox.core import builders
        return builders.get_evaluator(self, batch_size, is_distributed, testdev, legacy)

    def get_trainer(self, args):
        from yolox.core import builders
        return builders.get_trainer(self, args)

    def eval(self, model, evaluator, is_distributed, half=False, return_outputs=False):
        from yolox.core import builders
        return builders.eval(self, model, evaluator, is_distributed, half, return_outputs)
