from .base import VitBackbone
from .davit import DaViT
from .lvt import LVT
from .pit import PiT
from .twins import PCPVT, SVT

__all__ = ['VitBackbone', 'PCPVT', 'SVT', 'DaViT', 'PiT', 'LVT']
