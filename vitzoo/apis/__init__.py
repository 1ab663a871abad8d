"""The model zoo API: ``list_models``, ``get_model``, ``inference_model`` and complexity counts.

Submodules load on first use: listing models needs neither torch nor the toolboxes.
"""
_LAZY = {
    'ModelHub': 'model', 'ModelInfo': 'model', 'NoPublicWeightsError': 'model', 'list_models': 'model',
    'get_model': 'model', 'inference_model': 'inference', 'Complexity': 'complexity',
    'count_macs': 'complexity', 'get_model_complexity': 'complexity'
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(f'{__name__}.{_LAZY[name]}'), name)
        globals()[name] = value
        return value
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
