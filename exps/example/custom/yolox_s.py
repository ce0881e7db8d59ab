"""YOLOX-S on your own COCO-format data, as upstream's ``exps/example/custom/yolox_s.py``.

Copy this file, point ``data_dir`` at your folder (``annotations/instances_{train,val}2017.json``,
``train2017/``, ``val2017/``), set ``num_classes`` to your category count, and fine-tune from the
released COCO weights: ``python tools/train.py -f exps/example/custom/yolox_s.py -c yolox_s.pth -b 64``.
``-c`` loads every tensor whose name and shape fit; the 80-class predictions start afresh.
"""
import os

from yolox.exp import Exp as BaseExp


class Exp(BaseExp):
    def __init__(self):
        super().__init__()
        self.depth = 0.33
        self.width = 0.50
        self.exp_name = os.path.splitext(os.path.basename(__file__))[0]
        # your data set
        self.data_dir = "datasets/coco128"
        self.train_ann = "instances_train2017.json"
        self.val_ann = "instances_val2017.json"
        self.num_classes = 71
        self.max_epoch = 300
        self.data_num_workers = 4
        self.eval_interval = 1
