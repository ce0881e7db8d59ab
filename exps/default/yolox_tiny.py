"""yolox-tiny (upstream exps/default/yolox_tiny.py): depth 0.33, width 0.375, 416x416, no MixUp."""
import os

from yolox.exp import Exp as BaseExp


class Exp(BaseExp):
    def __init__(self):
        super().__init__()
        self.depth = 0.33
        self.width = 0.375
        self.input_size = (416, 416)
        self.mosaic_scale = (0.5, 1.5)
        self.random_size = (10, 20)
        self.test_size = (416, 416)
        self.enable_mixup = False
        self.exp_name = os.path.splitext(os.path.basename(__file__))[0]
