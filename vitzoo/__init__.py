"""vitzoo: Twins, DaViT, PiT and LVT backbones for the OpenMMLab 2.x toolboxes."""
from mmengine.config.utils import MODULE2PACKAGE

from .version import __version__, version_info

# Lets configs inherit vitzoo's with ``_base_ = 'vitzoo::twins/twins-pcpvt-small_8xb128_in1k.py'``
# once vitzoo is imported (tools/*.py import it first).
MODULE2PACKAGE.setdefault('vitzoo', 'vitzoo')

# The model-zoo API, imported on first use so that ``import vitzoo`` stays light.
_LAZY = {
    'list_models': 'vitzoo.apis.model',
    'get_model': 'vitzoo.apis.model',
    'inference_model': 'vitzoo.apis.inference',
    'get_model_complexity': 'vitzoo.apis.complexity',
}

__all__ = ['__version__', 'version_info', *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
