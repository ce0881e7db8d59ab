"""yolox-m (upstream exps/default/yolox_m.py): depth 0.67, width 0.75, 640x640."""
import os

from yolox.exp import Exp as BaseExp


class Exp(BaseExp):
    def __init__(self):
        super().__init__()
        self.depth = 0.67
        self.width = 0.75
        self.exp_name = os.path.splitext(os.path.basename(__file__))[0]
