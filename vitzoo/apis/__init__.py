"""The model zoo API: ``list_models``, ``get_model``, ``inference_model`` and complexity counts.

Submodules load on first use: listing models needs neither torch nor the toolboxes.
"""
from ..utils.lazy import lazy_attributes

_LAZY = {
    'ModelHub': '.model', 'ModelInfo': '.model', 'NoPublicWeightsError': '.model', 'list_models': '.model',
    'get_model': '.model', 'inference_model': '.inference', 'Complexity': '.complexity',
    'count_macs': '.complexity', 'get_model_complexity': '.complexity'
}

__all__ = list(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
