"""vitzoo: Twins, DaViT, PiT and LVT backbones for the OpenMMLab 2.x toolboxes."""
from mmengine.config.utils import MODULE2PACKAGE

from .utils.lazy import lazy_attributes
from .version import __version__, version_info

# Lets configs inherit vitzoo's with ``_base_ = 'vitzoo::twins/twins-pcpvt-small_8xb128_in1k.py'``
# once vitzoo is imported (tools/*.py import it first).
MODULE2PACKAGE.setdefault('vitzoo', 'vitzoo')
# mmengine finds the `mmseg::` (and `mmdet::`, `mmpretrain::`) configs through the distribution
# name; the onedl-* distributions have their own, and under the default names mmengine's
# get_config would pip-install the frozen open-mmlab releases, which break these.
MODULE2PACKAGE.update(mmdet='onedl-mmdetection', mmseg='onedl-mmsegmentation', mmpretrain='onedl-mmpretrain')

# The model-zoo API, imported on first use so that ``import vitzoo`` stays light.
_LAZY = {
    'list_models': '.apis.model',
    'get_model': '.apis.model',
    'inference_model': '.apis.inference',
    'get_model_complexity': '.apis.complexity',
}

__all__ = ['__version__', 'version_info', *_LAZY]
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
