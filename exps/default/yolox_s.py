"""yolox-s (upstream exps/default/yolox_s.py): depth 0.33, width 0.50, 640x640."""
import os

from yolox.exp import Exp as BaseExp


class Exp(BaseExp):
    def __init__(self):
        super().__init__()
        self.depth = 0.33
        self.width = 0.50
        self.exp_name = os.path.splitext(os.path.basename(__file__))[0]
