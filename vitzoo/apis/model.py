"""The model zoo: names from ``model-index.yml``, models built from their configs, weights loaded.

Mirrors mmpretrain's ``list_models`` / ``get_model`` for vitzoo's index. Every model in the index
names a config; ``Weights`` (when the model has a public direct download) is an http(s) URL with
the sha256 prefix in its file name, fetched once into ``~/.cache/vitzoo/checkpoints``
(``VITZOO_CACHE``) by :mod:`vitzoo.utils.download`.
"""
import copy
import difflib
import fnmatch
import importlib
import os
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import yaml

from ..utils.download import resolve_checkpoint

__all__ = ['ModelInfo', 'ModelHub', 'list_models', 'get_model', 'load_config', 'NoPublicWeightsError']

PACKAGE_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


class NoPublicWeightsError(ValueError):
    """``pretrained=True`` for a model whose weights have no direct download."""


@dataclass
class ModelInfo:
    """One entry of the model index."""

    name: str
    config: str  # absolute path
    collection: Optional[str] = None
    weights: Optional[str] = None
    metadata: dict = field(default_factory=dict)
    results: List[dict] = field(default_factory=list)
    converted_from: dict = field(default_factory=dict)
    metafile: Optional[str] = None

    @property
    def task(self) -> Optional[str]:
        return self.results[0].get('Task') if self.results else None

    @property
    def params(self) -> Optional[int]:
        return self.metadata.get('Parameters')

    @property
    def flops(self) -> Optional[int]:
        return self.metadata.get('FLOPs')


def default_index_paths() -> List[str]:
    """The installed index (``vitzoo/.mim/model-index.yml``), else the source tree's."""
    candidates = [osp.join(PACKAGE_ROOT, '.mim', 'model-index.yml'),
                  osp.join(osp.dirname(PACKAGE_ROOT), 'model-index.yml')]
    for path in candidates:
        if osp.isfile(path):
            return [path]
    return []


def _read_yaml(path: str) -> dict:
    with open(path, encoding='utf-8') as f:
        return yaml.safe_load(f) or {}


def load_model_index(index_path: str) -> Dict[str, ModelInfo]:
    """Read ``model-index.yml`` and the metafiles it imports; config paths become absolute."""
    root = osp.dirname(osp.abspath(index_path))
    index = _read_yaml(index_path)
    documents = [(index_path, index)]
    for rel in index.get('Import', []) or []:
        path = osp.join(root, rel)
        documents.append((path, _read_yaml(path)))
    models: Dict[str, ModelInfo] = {}
    for path, doc in documents:
        for entry in doc.get('Models', []) or []:
            name = entry['Name']
            if name.lower() in models:
                raise ValueError(f'model name {name!r} appears twice in {index_path} (again in {path})')
            config = entry.get('Config')
            if not config:
                raise ValueError(f'model {name!r} in {path} has no Config')
            models[name.lower()] = ModelInfo(
                name=name,
                config=config if osp.isabs(config) else osp.join(root, config),
                collection=entry.get('In Collection'),
                weights=entry.get('Weights'),
                metadata=dict(entry.get('Metadata') or {}),
                results=list(entry.get('Results') or []),
                converted_from=dict(entry.get('Converted From') or {}),
                metafile=path)
    return models


class ModelHub:
    """The models of vitzoo's index (and of any index registered with :meth:`register_model_index`)."""

    _models: Dict[str, ModelInfo] = {}
    _default_loaded = False

    @classmethod
    def _ensure_default(cls) -> None:
        if not cls._default_loaded:
            cls._default_loaded = True
            for path in default_index_paths():
                cls.register_model_index(path)

    @classmethod
    def register_model_index(cls, index_path: str) -> None:
        """Add the models of another ``model-index.yml``; names must stay unique."""
        for key, info in load_model_index(index_path).items():
            if key in cls._models and cls._models[key].metafile != info.metafile:
                raise ValueError(f'model name {info.name!r} of {info.metafile} is already defined in '
                                 f'{cls._models[key].metafile}')
            cls._models[key] = info

    @classmethod
    def get(cls, name: str) -> ModelInfo:
        cls._ensure_default()
        info = cls._models.get(name.lower())
        if info is None:
            close = cls.close_names(name)
            hint = f' Did you mean {", ".join(repr(c) for c in close)}?' if close else ''
            raise ValueError(f'no model named {name!r} in the vitzoo model index.{hint} '
                             'vitzoo.list_models() lists them all.')
        return copy.deepcopy(info)

    @classmethod
    def close_names(cls, name: str, limit: int = 3) -> List[str]:
        """Names of the index that start with ``name`` (a variant without its suffix), else similar ones."""
        cls._ensure_default()
        key = name.lower()
        keys = sorted(k for k in cls._models if k.startswith(key))
        keys += [k for k in difflib.get_close_matches(key, list(cls._models), n=limit, cutoff=0.6) if k not in keys]
        return [cls._models[k].name for k in keys[:limit]]

    @classmethod
    def has(cls, name: str) -> bool:
        cls._ensure_default()
        return name.lower() in cls._models

    @classmethod
    def all(cls) -> List[ModelInfo]:
        cls._ensure_default()
        return [copy.deepcopy(cls._models[k]) for k in sorted(cls._models)]


def list_models(pattern: Optional[str] = None,
                exclude_patterns: Optional[Sequence[str]] = None,
                task: Optional[str] = None) -> List[str]:
    """Sorted names of the models in the index.

    As mmpretrain's ``list_models``: ``pattern`` is a shell wildcard matched against the start of
    the name (``'twins-svt'``, ``'*distilled*'``), ``exclude_patterns`` remove names the same
    way, ``task`` keeps models with a result of that task (``'Image Classification'``,
    ``'Semantic Segmentation'``, ``'Panoptic Segmentation'``).

    Example:
        >>> import vitzoo
        >>> vitzoo.list_models('davit')
        ['davit-base_3rdparty_in1k', 'davit-small_3rdparty_in1k', 'davit-tiny_3rdparty_in1k']
    """
    models = ModelHub.all()
    names = [m.name for m in models]
    if pattern is not None:
        names = fnmatch.filter(names, pattern + '*')
    for excluded in exclude_patterns or []:
        names = [n for n in names if not fnmatch.fnmatch(n, excluded + '*')]
    if task is not None:
        tasks = {m.name: {r.get('Task') for r in m.results} for m in models}
        names = [n for n in names if task in tasks[n]]
    return sorted(names)


def load_config(model) -> Tuple['Config', Optional[ModelInfo]]:  # noqa: F821
    """``(config, index entry or None)`` for a model name, a config path or a Config."""
    from mmengine.config import Config
    if isinstance(model, Config):
        return copy.deepcopy(model), None
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f'expected a model name, a config path or a Config, got {type(model).__name__}')
    model = os.fspath(model)
    if model.endswith('.py') or osp.isfile(model):
        if not osp.isfile(model):
            raise FileNotFoundError(f'config {model!r} does not exist')
        return Config.fromfile(model), None
    info = ModelHub.get(model)
    return Config.fromfile(info.config), info


def task_scope(cfg) -> str:
    """The toolbox a config belongs to (its ``default_scope``): mmpretrain, mmseg or mmdet."""
    return cfg.get('default_scope', None) or 'mmpretrain'


def inference_model_cfg(model_cfg: dict) -> dict:
    """The model config without its training-only parts.

    A :class:`~vitzoo.models.DistillationClassifier` becomes a plain
    :class:`~vitzoo.models.ImageClassifier` (the teacher only takes part in training and lives
    outside the state dict, so checkpoints load into either).
    """
    model_cfg = copy.deepcopy(model_cfg)
    if str(model_cfg.get('type', '')).split('.')[-1] == 'DistillationClassifier':
        model_cfg.pop('teacher', None)
        model_cfg.pop('teacher_checkpoint', None)
        model_cfg['type'] = 'vitzoo.ImageClassifier'
    return model_cfg


def build_model_from_cfg(cfg):
    """Build ``cfg.model`` (training-only parts left out) in its toolbox's scope.

    ``SyncBN`` becomes ``BN`` without CUDA; a top-level ``data_preprocessor`` (mmpretrain's
    dataset configs) goes into the model as mmpretrain's Runner puts it.
    """
    import torch
    from mmengine.registry import DefaultScope
    from mmengine.utils import import_modules_from_strings

    from ..engine import replace_syncbn
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    import vitzoo.models  # noqa: F401
    scope = task_scope(cfg)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    model_cfg = inference_model_cfg(cfg.model)
    if not torch.cuda.is_available():
        model_cfg = replace_syncbn(model_cfg)
    if 'data_preprocessor' not in model_cfg and cfg.get('data_preprocessor') is not None:
        model_cfg['data_preprocessor'] = cfg.data_preprocessor
    with DefaultScope.overwrite_default_scope(scope):
        return registry.build(model_cfg)


def _dataset_meta_from_config(cfg) -> dict:
    """Class names (and palette) of the config's test dataset, as the toolbox defines them."""
    dataset = (cfg.get('test_dataloader') or {}).get('dataset')
    while isinstance(dataset, dict) and 'dataset' in dataset and 'type' in dataset and \
            str(dataset['type']).split('.')[-1] in ('ConcatDataset', 'RepeatDataset', 'ClassBalancedDataset'):
        dataset = dataset['dataset']
    if not isinstance(dataset, dict):
        return {}
    if dataset.get('metainfo'):
        return dict(dataset['metainfo'])
    registry = importlib.import_module(f'{task_scope(cfg)}.registry').DATASETS
    try:
        dataset_class = registry.get(dataset.get('type'))
    except Exception:  # noqa: BLE001  (an unknown or unimportable dataset type: no names)
        dataset_class = None
    return dict(getattr(dataset_class, 'METAINFO', None) or {})


def no_weights_message(info: ModelInfo, how: str = 'python') -> str:
    """How to get the weights of a model that has no direct download."""
    source = info.converted_from or {}
    page = source.get('Weights') or source.get('Code')
    file = source.get('File')
    family = (info.collection or '').lower()
    lines = [f'{info.name} has no public direct download of its weights.']
    if page:
        what = f'the official file {file}' if file else 'the official weights'
        lines.append(f'Download {what} from {page}, then either')
        if how == 'python':
            lines.append(f'  - pass its path: vitzoo.get_model({info.name!r}, pretrained={(file or "PATH")!r}) '
                         '(converted to vitzoo\'s layout as it loads), or')
        else:
            lines.append(f'  - pass its path: python tools/test.py {info.name} {file or "PATH"} '
                         '(converted to vitzoo\'s layout as it loads), or')
        lines.append(f'  - convert it once: python tools/model_converters/{family}2vitzoo.py '
                     f'{file or "SRC"} {info.name}.pth')
    else:
        lines.append('Train it with tools/train.py and pass the checkpoint, e.g. '
                     f'vitzoo.get_model({info.name!r}, pretrained="work_dirs/.../epoch_N.pth").')
    return '\n'.join(lines)


def get_model(model,
              pretrained: Union[bool, str] = False,
              device=None,
              url_mapping: Optional[Tuple[str, str]] = None,
              strict: bool = True,
              **kwargs):
    """Build a model of the index, a config file or a Config, optionally with weights.

    Args:
        model: a name of :func:`list_models`, a config path or an ``mmengine.Config``.
        pretrained: ``False`` (initialised weights), ``True`` (the index's ``Weights``; raises
            :class:`NoPublicWeightsError`, with the way to get them, for models without a direct
            download), or a checkpoint path or http(s) URL. URLs are downloaded once into
            ``~/.cache/vitzoo/checkpoints`` (``VITZOO_CACHE``), resumed after an interruption and
            checked against the sha256 prefix in the file name. Official, timm and mmpretrain
            layouts of the vitzoo classifiers are converted as they load.
        device: move the model there (default: stay on CPU).
        url_mapping: ``(regex, replacement)`` applied to a weights URL, e.g. to use a mirror or a
            local directory: ``('https://download.openmmlab.com/', 'http://mirror/')``.
        strict: load the checkpoint strictly: every tensor of the model must come from the
            checkpoint with its shape and every checkpoint tensor must be used, or a
            :class:`~vitzoo.models.checkpoint.CheckpointMismatchError` names the file, its
            layout and the differing keys. ``False`` loads what fits and logs what was left out.
        **kwargs: overrides merged into the config's ``model``.

    Returns:
        The model in eval mode, with ``cfg`` / ``_config`` (the config), ``dataset_meta`` /
        ``_dataset_meta`` (class names from the checkpoint or the config's dataset) and
        ``_metainfo`` (the index entry or None).

    Example (downloads the released weights once)::

        import vitzoo
        model = vitzoo.get_model('twins-pcpvt-small_3rdparty_8xb128_in1k', pretrained=True)
    """
    cfg, info = load_config(model)
    if kwargs:
        cfg.merge_from_dict({'model': kwargs})
    checkpoint_path = None
    if pretrained is True:
        if info is None:
            if not cfg.get('load_from'):
                raise ValueError('pretrained=True needs a model name of the index (or a config with load_from); '
                                 'pass a checkpoint path or URL instead')
            pretrained = cfg.load_from
        elif not info.weights:
            raise NoPublicWeightsError(no_weights_message(info))
        else:
            pretrained = info.weights
    if pretrained:
        if url_mapping is not None:
            pretrained = re.sub(url_mapping[0], url_mapping[1], pretrained)
        checkpoint_path = resolve_checkpoint(pretrained)

    net = build_model_from_cfg(cfg)
    dataset_meta = {}
    if checkpoint_path is not None:
        from ..models.checkpoint import load_checkpoint_to_model
        checkpoint, _ = load_checkpoint_to_model(net, checkpoint_path, strict=strict,
                                                 hint='Pass strict=False to load only the tensors that fit.')
        meta = checkpoint.get('meta', {}) if isinstance(checkpoint, dict) else {}
        if meta.get('dataset_meta'):
            dataset_meta = dict(meta['dataset_meta'])
        elif meta.get('CLASSES'):
            dataset_meta = {'classes': meta['CLASSES']}
    if not dataset_meta.get('classes'):
        dataset_meta = {**_dataset_meta_from_config(cfg), **dataset_meta}
    if device is not None:
        net.to(device)
    net._config = cfg
    net.cfg = cfg  # mmseg's / mmdet's inference helpers read ``model.cfg``
    net._dataset_meta = dataset_meta
    net.dataset_meta = dataset_meta
    net._metainfo = info
    return net.eval()
