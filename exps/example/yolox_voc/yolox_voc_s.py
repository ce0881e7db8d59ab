"""YOLOX-S on Pascal VOC, as upstream's exps/example/yolox_voc/yolox_voc_s.py: 20 classes, trained
on VOC2007 + VOC2012 trainval, evaluated on VOC2007 test with the VOC AP (VOCEvaluator).

``data_dir`` is the VOCdevkit folder (upstream: $YOLOX_DATADIR/VOCdevkit, default
datasets/VOCdevkit); pass ``--data_dir DIR/VOCdevkit`` to point elsewhere.
"""
import os

from yolox.exp import Exp as MyExp


class Exp(MyExp):
    def __init__(self):
        super().__init__()
        self.num_classes = 20
        self.depth = 0.33
        self.width = 0.50
        self.warmup_epochs = 1
        self.data_dir = os.path.join("datasets", "VOCdevkit")
        self.train_sets = [("2007", "trainval"), ("2012", "trainval")]
        self.test_sets = [("2007", "test")]

        # ---------- transform config ------------ #
        self.mosaic_prob = 1.0
        self.mixup_prob = 1.0
        self.hsv_prob = 1.0
        self.flip_prob = 0.5

        self.exp_name = os.path.split(os.path.realpath(__file__))[1].split(".")[0]

    def get_dataset(self, cache=False):
        from yolox.data import TrainTransform, VOCDetection

        return VOCDetection(
            data_dir=self._require_data_dir(),
            image_sets=self.train_sets,
            img_size=self.input_size,
            preproc=TrainTransform(max_labels=50, flip_prob=self.flip_prob, hsv_prob=self.hsv_prob),
            cache=cache,
        )

    def get_eval_dataset(self, testdev=False, legacy=False):
        from yolox.data import ValTransform, VOCDetection

        return VOCDetection(
            data_dir=self._require_data_dir(),
            image_sets=self.test_sets,
            img_size=self.test_size,
            preproc=ValTransform(legacy=legacy),
        )

    def get_evaluator(self, batch_size, is_distributed, testdev=False, legacy=False):
        from yolox.evaluators import VOCEvaluator

        return VOCEvaluator(
            dataloader=self.get_eval_loader(batch_size, is_distributed, testdev=testdev, legacy=legacy),
            img_size=self.test_size,
            confthre=self.test_conf,
            nmsthre=self.nmsthre,
            num_classes=self.num_classes,
        )
