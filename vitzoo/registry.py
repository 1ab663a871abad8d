"""vitzoo's registries: children of MMEngine's root registries under the scope ``vitzoo``.

Because each is a child of the root registry, ``type='vitzoo.PCPVT'`` resolves from an mmpretrain,
mmsegmentation or mmdetection config alike: MMEngine imports ``vitzoo.registry`` when it meets the
scope prefix, and the registry imports ``locations`` on first lookup. Nothing is registered into the
toolboxes' own registries, where names such as ``PCPVT``, ``SVT`` and ``DaViT`` are already taken.
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='vitzoo', locations=['vitzoo.models'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope='vitzoo', locations=['vitzoo.datasets'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, scope='vitzoo', locations=['vitzoo.datasets'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='vitzoo', locations=['vitzoo.engine'])
METRICS = Registry('metric', parent=MMENGINE_METRICS, scope='vitzoo', locations=['vitzoo.evaluation'])
