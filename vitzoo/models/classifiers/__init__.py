from .distill import DistillationClassifier
from .image import ImageClassifier
from .lvt import LVTClassifier

__all__ = ['ImageClassifier', 'DistillationClassifier', 'LVTClassifier']
