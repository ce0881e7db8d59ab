"""Datasets: COCO json + images, Pascal VOC, and the mosaic/mixup training wrapper."""
from detcore.data.coco import load_coco
from yolox.data.datasets.coco import COCODataset, SourceDataset
from yolox.data.datasets.coco_classes import COCO_CLASSES
from yolox.data.datasets.datasets_wrapper import Dataset
from yolox.data.datasets.mosaicdetection import MosaicDetection
from yolox.data.datasets.voc import VOCDetection
from yolox.data.datasets.voc_classes import VOC_CLASSES

__all__ = ["COCO_CLASSES", "COCODataset", "Dataset", "MosaicDetection", "SourceDataset", "VOCDetection",
           "VOC_CLASSES", "load_coco"]
