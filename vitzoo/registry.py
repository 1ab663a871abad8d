"""vitzoo's registries: children of MMEngine's root registries under the scope ``vitzoo``.

Because each is a child of the root registry, ``type='vitzoo.PCPVT'`` resolves from an mmpretrain,
mmsegmentation or mmdetection config alike: MMEngine imports ``vitzoo.registry`` when it meets the
scope prefix, and the registry imports ``locations`` on first lookup. Nothing is registered into the
toolboxes' own registries, where names such as ``PCPVT``, ``SVT`` and ``DaViT`` are already taken.

A config inheriting a vitzoo config by package prefix (``_base_ = 'vitzoo::twins/...py'``) gets
``_scope_='vitzoo'`` on every dict it inherits (MMEngine's rule for ``pkg::`` bases), so the
toolbox types in them (``ClsDataPreprocessor``, ``ImageNet``, ``IterTimerHook``...) are looked up
here first. A name vitzoo does not register is then looked up in the enclosing toolbox scope: the
latest default scope that is not ``vitzoo`` (the Runner sets it from the config's
``default_scope``), never in a fixed order of toolboxes, which would pick mmseg's
``LoadAnnotations`` for an mmdet config.
"""
import importlib
from typing import Optional

import mmengine.registry as root
from mmengine.registry import DefaultScope
from mmengine.registry import Registry as MMEngineRegistry

SCOPE = 'vitzoo'


def enclosing_toolbox_scope() -> Optional[str]:
    """The most recent default scope other than ``vitzoo`` (e.g. the config's ``mmpretrain``), or None."""
    for instance in reversed(list(DefaultScope._instance_dict.values())):
        if instance.scope_name != SCOPE:
            return instance.scope_name
    return None


class Registry(MMEngineRegistry):
    """A vitzoo registry: its own names first, then the enclosing toolbox's registry, then the root."""

    def get(self, key: str):
        if '.' in key:  # scoped ('mmdet.FPN', 'vitzoo.PCPVT'): MMEngine's lookup
            return super().get(key)
        self.import_from_location()
        if key in self._module_dict:
            return self._module_dict[key]
        toolbox = self._toolbox_registry()
        found = toolbox.get(key) if toolbox is not None else None
        return found if found is not None else super().get(key)

    def _toolbox_registry(self) -> Optional[MMEngineRegistry]:
        scope = enclosing_toolbox_scope()
        if scope is None:
            return None
        try:
            importlib.import_module(f'{scope}.registry')
        except ImportError:
            return None
        registry = self._get_root_registry()._search_child(scope)
        return registry if registry is not self else None


MODELS = Registry('model', parent=root.MODELS, scope=SCOPE, locations=['vitzoo.models'])
DATASETS = Registry('dataset', parent=root.DATASETS, scope=SCOPE, locations=['vitzoo.datasets'])
TRANSFORMS = Registry('transform', parent=root.TRANSFORMS, scope=SCOPE, locations=['vitzoo.datasets'])
HOOKS = Registry('hook', parent=root.HOOKS, scope=SCOPE, locations=['vitzoo.engine'])
# Registries where vitzoo registers nothing: children all the same, so that the inherited dicts of a
# ``vitzoo::`` base config (metrics, visualizers, samplers, loops...) resolve in the toolbox's.
_OTHERS = {name: Registry(getattr(root, name).name, parent=getattr(root, name), scope=SCOPE)
           for name in ('RUNNERS', 'RUNNER_CONSTRUCTORS', 'LOOPS', 'DATA_SAMPLERS', 'MODEL_WRAPPERS',
                        'WEIGHT_INITIALIZERS', 'OPTIMIZERS', 'OPTIM_WRAPPERS', 'OPTIM_WRAPPER_CONSTRUCTORS',
                        'PARAM_SCHEDULERS', 'METRICS', 'EVALUATOR', 'TASK_UTILS', 'VISUALIZERS', 'VISBACKENDS',
                        'LOG_PROCESSORS', 'INFERENCERS', 'FUNCTIONS', 'STRATEGIES')}
