"""yolov3 (upstream exps/default/yolov3.py): Darknet-53 + FPN with the YOLOX decoupled head."""
import os

from yolox.exp import Exp as BaseExp


class Exp(BaseExp):
    def __init__(self):
        super().__init__()
        self.depth = 1.0
        self.width = 1.0
        self.exp_name = os.path.splitext(os.path.basename(__file__))[0]

    def build_model(self):
        from yolox.models import YOLOFPN, YOLOX, YOLOXHead

        head = YOLOXHead(self.num_classes, self.width, in_channels=[128, 256, 512], act="lrelu")
        return YOLOX(YOLOFPN(), head)
