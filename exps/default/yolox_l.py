"""yolox-l (upstream exps/default/yolox_l.py): depth 1.0, width 1.0, 640x640."""
import os

from yolox.exp import Exp as BaseExp


class Exp(BaseExp):
    def __init__(self):
        super().__init__()
        self.depth = 1.0
        self.width = 1.0
        self.exp_name = os.path.splitext(os.path.basename(__file__))[0]
