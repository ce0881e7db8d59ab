"""yolox-x (upstream exps/default/yolox_x.py): depth 1.33, width 1.25, 640x640."""
import os

from yolox.exp import Exp as BaseExp


class Exp(BaseExp):
    def __init__(self):
        super().__init__()
        self.depth = 1.33
        self.width = 1.25
        self.exp_name = os.path.splitext(os.path.basename(__file__))[0]
