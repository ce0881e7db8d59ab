"""YOLOX training: trainer loop, LR schedules, EMA."""
from yolox.core.ema import ModelEMA
from yolox.core.lr_scheduler import LRScheduler
from yolox.core.trainer import Trainer

__all__ = ["LRScheduler", "ModelEMA", "Trainer"]
