"""YOLOX-nano on the synthetic shapes set in Pascal VOC layout: the yolox_nano_shapes.py recipe
(same model, sizes, augmentation and schedule), reading
``python tools/make_shapes.py --out datasets/shapes_voc --format voc`` through VOCDetection and
scoring with VOCEvaluator (VOC2007's 11-point AP, difficult boxes ignored).

Train on VOC2007 trainval (the generator's train images), evaluate on VOC2007 test (its val
images). The classes are the generator's four categories, in its order; a set written with
``--classes`` uses a subset of them, which reads fine (the other classes just have no boxes).
"""
import os
from pathlib import Path

from yolox.exp.build import get_exp_by_file

# the COCO shapes recipe, loaded the way tools/train.py loads exp files (not a package)
ShapesExp = type(get_exp_by_file(Path(__file__).with_name("yolox_nano_shapes.py")))


class Exp(ShapesExp):
    def __init__(self):
        super().__init__()
        self.data_dir = os.path.join("datasets", "shapes_voc", "VOCdevkit")
        self.train_sets = [("2007", "trainval")]
        self.test_sets = [("2007", "test")]
        self.exp_name = os.path.splitext(os.path.basename(__file__))[0]

    def get_dataset(self, cache=False):
        from yolox.data import TrainTransform, VOCDetection

        return VOCDetection(data_dir=self._require_data_dir(), image_sets=self.train_sets,
                            img_size=self.input_size, class_names=self.class_names,
                            preproc=TrainTransform(max_labels=50, flip_prob=self.flip_prob,
                                                   hsv_prob=self.hsv_prob),
                            cache=cache)

    def get_eval_dataset(self, testdev=False, legacy=False):
        from yolox.data import ValTransform, VOCDetection

        return VOCDetection(data_dir=self._require_data_dir(), image_sets=self.test_sets,
                            img_size=self.test_size, class_names=self.class_names,
                            preproc=ValTransform(legacy=legacy))

    def get_evaluator(self, batch_size, is_distributed, testdev=False, legacy=False):
        from yolox.evaluators import VOCEvaluator

        return VOCEvaluator(dataloader=self.get_eval_loader(batch_size, is_distributed, testdev, legacy),
                            img_size=self.test_size, confthre=self.test_conf, nmsthre=self.nmsthre,
                            num_classes=self.num_classes)
