"""vitzoo: Twins, DaViT, PiT and LVT backbones for the OpenMMLab 2.x toolboxes."""
from mmengine.config.utils import MODULE2PACKAGE

from .version import __version__, version_info

# Lets configs inherit vitzoo's with ``_base_ = 'vitzoo::twins/twins-pcpvt-small_8xb128_in1k.py'``
# once vitzoo is imported (tools/*.py import it first).
MODULE2PACKAGE.setdefault('vitzoo', 'vitzoo')

__all__ = ['__version__', 'version_info']
