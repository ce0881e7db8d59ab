"""Datasets: COCO json + images, and the mosaic/mixup training wrapper."""
from detcore.coco import load_coco
from yolox.data.datasets.coco import COCODataset
from yolox.data.datasets.coco_classes import COCO_CLASSES
from yolox.data.datasets.datasets_wrapper import Dataset
from yolox.data.datasets.mosaicdetection import MosaicDetection

__all__ = ["COCO_CLASSES", "COCODataset", "Dataset", "MosaicDetection", "load_coco"]
