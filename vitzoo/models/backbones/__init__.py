from .base import VitBackbone
from .twins import PCPVT, SVT

__all__ = ['VitBackbone', 'PCPVT', 'SVT']
