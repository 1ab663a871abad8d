from .base import VitBackbone
from .lvt import LVT
from .twins import PCPVT, SVT

__all__ = ['VitBackbone', 'PCPVT', 'SVT', 'LVT']
