"""YOLOX-nano on the synthetic shapes set (tools/make_shapes.py): the README's main command.

Tuned for a short CPU run (under 10 minutes on 2 cores, batch 8 as in tools/run_demo.sh): 320 px
input, 14 epochs with a one-epoch warm-up, 24x upstream's per-image learning rate (0.03 at batch 8),
and no mosaic. Measured on 1000 train / 100 val images: with mosaic (p=0.5) a 10-epoch run ended at
AP50 0.36; without it AP50 passed 0.5 by epoch 7 and ended at 0.68 (473 s of training).
"""
import os

from yolox.exp import Exp as BaseExp


class Exp(BaseExp):
    def __init__(self):
        super().__init__()
        # model: yolox-nano
        self.num_classes = 4
        self.class_names = ("circle", "rectangle", "triangle", "star")
        self.depth = 0.33
        self.width = 0.25
        # data
        self.data_dir = "datasets/shapes"
        self.data_num_workers = 1
        self.input_size = (320, 320)
        self.test_size = (320, 320)
        self.multiscale_range = 0
        # augmentation: flip + HSV only (mosaic, its affine, and mixup off)
        self.mosaic_prob = 0.0
        self.enable_mixup = False
        self.mixup_prob = 0.0
        # schedule
        self.max_epoch = 14
        self.warmup_epochs = 1
        self.no_aug_epochs = 2
        self.basic_lr_per_img = 0.24 / 64.0
        self.eval_interval = 1
        self.print_interval = 10
        self.save_history_ckpt = False
        self.output_dir = "./yolox_output"
        # eval
        self.test_conf = 0.01
        self.nmsthre = 0.65
        self.exp_name = os.path.splitext(os.path.basename(__file__))[0]

    def build_model(self):
        from yolox.models import YOLOPAFPN, YOLOX, YOLOXHead

        in_channels = [256, 512, 1024]
        backbone = YOLOPAFPN(self.depth, self.width, in_channels=in_channels, act=self.act,
                             depthwise=True)
        head = YOLOXHead(self.num_classes, self.width, in_channels=in_channels, act=self.act,
                         depthwise=True)
        return YOLOX(backbone, head)
