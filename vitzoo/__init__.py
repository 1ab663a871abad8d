"""vitzoo: Twins, DaViT, PiT and LVT backbones for the OpenMMLab 2.x toolboxes."""
from .version import __version__, version_info

__all__ = ['__version__', 'version_info']
