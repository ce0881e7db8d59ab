"""YOLOX data pipeline: COCO and VOC datasets, augmentations, samplers and loader helpers."""
from yolox.data.data_augment import TrainTransform, ValTransform
from yolox.data.dataloading import DataLoader, worker_init_reset_seed
from yolox.data.datasets import (COCO_CLASSES, VOC_CLASSES, COCODataset, Dataset, MosaicDetection,
                                 VOCDetection, load_coco)
from yolox.data.samplers import InfiniteSampler, YoloBatchSampler

__all__ = ["COCO_CLASSES", "COCODataset", "Dataset", "MosaicDetection", "VOC_CLASSES", "VOCDetection",
           "load_coco", "TrainTransform", "ValTransform", "DataLoader", "worker_init_reset_seed",
           "InfiniteSampler", "YoloBatchSampler"]
