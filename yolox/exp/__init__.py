"""Experiments: typed configuration objects that build the model and delegate the rest."""
from .base_exp import BaseExp
from .build import get_exp, get_exp_by_file, get_exp_by_name
from .yolox_base import Exp

__all__ = ["BaseExp", "Exp", "get_exp", "get_exp_by_file", "get_exp_by_name"]
