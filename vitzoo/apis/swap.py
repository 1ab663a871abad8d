"""Swap a vitzoo backbone into any mmpretrain, mmseg or mmdet config (``tools/misc/swap_backbone.py``).

:func:`swap_backbone` writes a short config that inherits the source config through ``_base_`` and
overrides only what the new backbone changes:

* ``model.backbone`` (``_delete_=True``): the family, its arch and the constructor arguments its
  ImageNet classifier was trained with (drop path, distillation token), the outputs the source
  model reads, and ``init_cfg`` Pretrained with the index's weights or the given checkpoint;
* every argument that takes the backbone's maps: ``in_channels`` (and where the levels change,
  ``in_index`` / ``start_level``) of the first neck, or without a neck of the decode and auxiliary
  heads (mmseg) or of the classification head (mmpretrain, with the pooling neck added or removed
  as the backbone returns maps or a class token);
* ``custom_imports`` (vitzoo's models), and ``load_from`` / mmseg's ``model.pretrained`` set to
  ``None`` where the source loads weights of its old backbone.

Which maps the source model reads is measured, not guessed: the source backbone runs once on a
small input, giving the width and stride of each of its outputs. The new backbone returns maps at
the same strides (``out_indices`` chosen from the family's output layout, read from the class
without building it), so the necks' outputs and the heads' strides (anchors, RoI extractors) stay
as they are. With ``out_indices`` given, FPN-style necks follow through ``start_level``; a neck or
head that cannot take the requested maps is refused with a :class:`SwapError` naming its key.

Before anything is written the new config is loaded, its model built, the checkpoint loaded
strictly (a local file; for the index's download URL the classifier's backbone tensors are matched
against the new backbone without downloading), and one loss step (with backward) and one
prediction run on a small random batch.
"""
import copy
import difflib
import importlib
import importlib.util
import inspect
import math
import os
import os.path as osp
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

from .model import ModelHub, ModelInfo

__all__ = ['SwapError', 'SwapResult', 'swap_backbone', 'resolve_source', 'resolve_backbone']

TOOLBOXES = ('mmpretrain', 'mmseg', 'mmdet')
CONFIG_PACKAGES = ('vitzoo', ) + TOOLBOXES
PROBE_SIZE = 64  # side of the input the source backbone runs on to measure its outputs
CHECK_SIZE = 64  # side of the check's random images
POOLING_NECKS = ('GlobalAveragePooling', 'GeneralizedMeanPooling')  # mmpretrain necks that keep widths
# Arguments of a classifier's backbone that shape its outputs for the classifier's head; dense
# models set their own.
CLASSIFIER_OUTPUT_ARGS = ('out_indices', 'out_type', 'norm_after_stage')
# Arguments never carried from the classifier's backbone: training state, or set by the swap.
NOT_CARRIED = ('type', 'init_cfg', 'frozen_stages', 'norm_eval', 'with_cp')
# vitzoo's schedule of each task, whose optimizer the recipe takes (configs/_base_/schedules/).
TASK_SCHEDULES = dict(mmpretrain='imagenet_bs1024_adamw.py', mmseg='schedule_160k.py', mmdet='schedule_1x.py')
LINE_WIDTH = 110


class SwapError(ValueError):
    """A source config, backbone or option the swap cannot use; the message names it and why."""


# ------------------------------------------------------------------------------- sources


def configs_dir(package: str) -> str:
    """The installed configs of ``package`` (``<package>/.mim/configs``, a link to vitzoo's configs/)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SwapError(f'{package} is not installed, so {package}:: configs cannot be read')
    return osp.realpath(osp.join(list(spec.submodule_search_locations)[0], '.mim', 'configs'))


@dataclass
class Source:
    """The source config: its file, what ``_base_`` names it by, the loaded config, its toolbox."""

    name: str
    path: str
    cfg: object
    scope: str
    base: str = ''  # set by :func:`base_reference` for a given output directory


def _package_config(name: str) -> str:
    """The file of a ``pkg::rel/path.py`` name, with close names suggested when it does not exist."""
    package, _, rel = name.partition('::')
    if package not in CONFIG_PACKAGES:
        raise SwapError(f'SRC_CONFIG {name!r}: unknown package {package!r}; configs can come from '
                        f'{", ".join(p + "::" for p in CONFIG_PACKAGES)}')
    root = configs_dir(package)
    path = osp.join(root, rel)
    if not osp.isfile(path):
        folder = osp.dirname(path)
        candidates = sorted(f for f in os.listdir(folder) if f.endswith('.py')) if osp.isdir(folder) else []
        close = difflib.get_close_matches(osp.basename(rel), candidates, n=3, cutoff=0.6)
        hint = f' Did you mean {", ".join(repr(osp.join(osp.dirname(rel), c)) for c in close)}?' if close else ''
        raise SwapError(f'SRC_CONFIG {name!r}: no such config in {package} ({path}).{hint}')
    return path


def resolve_source(name: str) -> Source:
    """Load SRC_CONFIG: a config file, ``pkg::path`` of vitzoo or a toolbox, or a model name of the index."""
    from mmengine.config import Config
    if '::' in name:
        path = _package_config(name)
    elif osp.isfile(name):
        path = osp.abspath(name)
    elif ModelHub.has(name):
        path = ModelHub.get(name).config
    else:
        raise SwapError(f'SRC_CONFIG {name!r} is neither a config file, nor pkg::path of a config of '
                        f'{", ".join(CONFIG_PACKAGES)} (e.g. mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py), '
                        'nor a model name of vitzoo\'s index')
    try:
        cfg = Config.fromfile(path)
    except Exception as err:  # noqa: BLE001  (a config can fail in many ways; name the file)
        raise SwapError(f'SRC_CONFIG {name!r}: cannot load {path}: {err}') from err
    scope = cfg.get('default_scope')
    if scope not in TOOLBOXES:
        raise SwapError(f'SRC_CONFIG {name!r}: default_scope is {scope!r}; the swap handles configs of '
                        f'{", ".join(TOOLBOXES)}')
    if not isinstance(cfg.get('model'), dict) or not isinstance(cfg.model.get('backbone'), dict):
        raise SwapError(f'SRC_CONFIG {name!r} has no model.backbone to replace')
    return Source(name=name, path=path, cfg=cfg, scope=scope)


def base_reference(source: Source, out_dir: str) -> str:
    """How the new config names its ``_base_``: ``pkg::rel`` for the toolboxes' configs, else a relative path.

    Not ``vitzoo::``: MMEngine gives every dict of a ``pkg::`` base the scope ``pkg``, and vitzoo's
    configs are built by the toolboxes' registries (``EncoderDecoder`` is no vitzoo type).
    """
    if '::' in source.name and not source.name.startswith('vitzoo::'):
        return source.name
    real = osp.realpath(source.path)
    for package in TOOLBOXES:
        try:
            root = configs_dir(package)
        except SwapError:
            continue
        if real.startswith(root + os.sep):
            return f'{package}::{osp.relpath(real, root)}'
    return osp.relpath(osp.abspath(source.path), osp.abspath(out_dir))


# ----------------------------------------------------------------------------- backbones


@dataclass
class Backbone:
    """The backbone asked for: its class, the arguments its classifier was trained with, its weights."""

    spec: str
    cls: type
    args: dict  # the classifier's backbone arguments (arch included), or just ``arch``
    info: Optional[ModelInfo] = None  # the index entry whose weights it takes
    classifier_cfg: Optional[object] = None  # that entry's config


def _backbone_class(name: str, spec: str) -> type:
    import vitzoo.models  # noqa: F401  (registers the backbones)
    from vitzoo.models import VitBackbone
    from vitzoo.registry import MODELS
    short = name.split('.')[-1]
    cls = MODELS.get(short) if name in (short, f'vitzoo.{short}') else None
    if not (isinstance(cls, type) and issubclass(cls, VitBackbone)):
        known = sorted(c.__name__ for c in MODELS.module_dict.values()
                       if isinstance(c, type) and issubclass(c, VitBackbone) and c is not VitBackbone)
        raise SwapError(f'BACKBONE {spec!r}: {name!r} is not a vitzoo backbone; TYPE is one of '
                        f'{", ".join("vitzoo." + k for k in known)}')
    return cls


def _classifier_backbone(info: ModelInfo) -> Tuple[object, dict]:
    from mmengine.config import Config
    cfg = Config.fromfile(info.config)
    return cfg, dict(cfg.model.backbone)


def resolve_backbone(spec: str) -> Backbone:
    """BACKBONE: a model name of the index, or ``TYPE:ARCH`` (``vitzoo.SVT:base``).

    For ``TYPE:ARCH`` the index's classifier with that backbone (and no distillation token) gives
    the weights and training arguments, when there is one.
    """
    if ':' in spec:
        type_name, _, arch = spec.partition(':')
        cls = _backbone_class(type_name, spec)
        try:
            canonical = cls.zoo_name(arch)
        except ValueError as err:
            raise SwapError(f'BACKBONE {spec!r}: {err}') from err
        for info in ModelHub.all():
            if info.task != 'Image Classification' or info.collection != cls.paper:
                continue
            cfg, args = _classifier_backbone(info)
            if (args['type'].split('.')[-1] == cls.__name__ and isinstance(args.get('arch'), str)
                    and cls.zoo_name(args['arch']) == canonical and not args.get('distilled', False)):
                return Backbone(spec, cls, args, info, cfg)
        return Backbone(spec, cls, dict(arch=canonical))
    try:
        info = ModelHub.get(spec)
    except ValueError as err:
        raise SwapError(f'BACKBONE {spec!r}: {err} Or pass TYPE:ARCH, e.g. vitzoo.SVT:base.') from err
    cfg, args = _classifier_backbone(info)
    cls = _backbone_class(str(args.get('type')), spec)
    return Backbone(spec, cls, args, info, cfg)


def output_layout(cls: type, args: dict) -> List[Tuple[int, Optional[int]]]:
    """``(channels, stride)`` of every output a backbone built with ``args`` can return."""
    options = {k: v for k, v in args.items() if k not in ('arch', 'out_indices')}
    cls.describe_outputs(**args)  # checks the arguments (unknown names, out_indices, arch)
    return cls.output_layout(cls.resolve_arch(args['arch'])[1], **options)


# -------------------------------------------------------------------------------- levels


def _power_of_two(ratio: float) -> int:
    return 2**round(math.log2(ratio))


def probe_levels(source: Source) -> List[Tuple[int, Optional[int]]]:
    """``(channels, stride)`` of each output of the source backbone, measured on a small input."""
    import torch
    from mmengine.registry import DefaultScope
    from mmengine.utils import import_modules_from_strings

    from ..engine.runtime import replace_syncbn
    cfg = source.cfg
    backbone_cfg = replace_syncbn(copy.deepcopy(cfg.model.backbone.to_dict()))
    backbone_cfg.pop('init_cfg', None)
    backbone_cfg.pop('pretrained', None)
    what = f'model.backbone ({backbone_cfg.get("type")})'
    try:
        if cfg.get('custom_imports'):
            import_modules_from_strings(**cfg.custom_imports)
        registry = importlib.import_module(f'{source.scope}.registry').MODELS
        with DefaultScope.overwrite_default_scope(source.scope):
            backbone = registry.build(backbone_cfg)
        backbone.eval()  # not chained: some toolbox backbones' train() returns None
        x = torch.zeros(1, backbone_cfg.get('in_channels', 3), PROBE_SIZE, PROBE_SIZE)
        with torch.no_grad():
            outs = backbone(x)
    except Exception as err:  # noqa: BLE001  (any backbone; say which and why)
        raise SwapError(f'cannot run the source backbone {what} on a {PROBE_SIZE}x{PROBE_SIZE} input to measure '
                        f'the widths and strides of its outputs: {type(err).__name__}: {err}') from err
    outs = [outs] if isinstance(outs, torch.Tensor) else list(outs)
    levels = []
    for out in outs:
        if not isinstance(out, torch.Tensor):
            raise SwapError(f'the source backbone {what} returns a {type(out).__name__}, not tensors')
        stride = _power_of_two(PROBE_SIZE / out.shape[-2]) if out.dim() == 4 else None
        levels.append((int(out.shape[1]), stride))
    return levels


def match_strides(cls: type, args: dict, src_strides: Sequence[Optional[int]]) -> Tuple[int, ...]:
    """The outputs of the new backbone at the source backbone's strides, in the same order."""
    layout = output_layout(cls, args)
    ours = [s for _, s in layout]
    if len(set(src_strides)) != len(src_strides):
        raise SwapError(f'the source backbone returns {len(src_strides)} maps at strides {tuple(src_strides)}; '
                        'the model reads several maps of one stride (a plain ViT with a neck that resamples them), '
                        f'which a {cls.__name__} pyramid cannot stand in for; adapt this config by hand')
    indices = []
    for i, stride in enumerate(src_strides):
        if stride not in ours:
            raise SwapError(f'the source backbone\'s output {i} has stride {stride}, which {cls.__name__} '
                            f'(arch {args["arch"]!r}) does not return (its outputs: strides {tuple(ours)}); '
                            'choose its outputs with --out-indices')
        indices.append(ours.index(stride))
    return tuple(indices)


# --------------------------------------------------------------------------- overrides


def plain(value):
    """A config value as plain dicts/lists, without MMEngine's ``_scope_`` markers."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if k != '_scope_'}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    return value


class Overrides:
    """The ``model`` entries the new config sets, built key by key against the source's ``model``.

    A key inside a list (``neck.0.in_channels``) copies the whole source list into the overrides,
    since a config can replace a list but not merge into one.
    """

    def __init__(self, source_model: dict):
        self.source = source_model
        self.model: dict = {}
        self.changes: List[str] = []

    def set(self, path: Sequence[Union[str, int]], value) -> None:
        """Set ``model.<path>`` and record the change (``model.neck.in_channels: [256, ...] -> [96, ...]``)."""
        node, src = self.model, self.source
        for depth, key in enumerate(path[:-1]):
            nxt = path[depth + 1]
            if isinstance(nxt, int):
                if not isinstance(node.get(key), list):
                    node[key] = plain(src[key])
                node, src = node[key], src[key]
            elif isinstance(node, list):
                node, src = node[key], src[key]
            else:
                node, src = node.setdefault(key, {}), src.get(key, {}) if isinstance(src, dict) else {}
        last = path[-1]
        old = src.get(last, '<unset>') if isinstance(src, dict) else src[last]
        node[last] = value
        self.changes.append(f'{dotted(path)}: {_one_line(plain(old))} -> {_one_line(value)}')


def dotted(path: Sequence[Union[str, int]]) -> str:
    return '.'.join(['model', *map(str, path)])


# ----------------------------------------------------------------------------- planning


@dataclass
class Plan:
    """What the new config says, and why."""

    backbone: dict
    channels: List[int]
    strides: List[Optional[int]]
    overrides: Overrides
    src_levels: List[Tuple[int, Optional[int]]]
    notes: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)


class ConsumerAdapter:
    """Sets the arguments of the necks and heads that read the backbone's outputs."""

    def __init__(self, scope: str, overrides: Overrides, src_levels, channels, strides, user_indices: bool):
        self.scope, self.overrides = scope, overrides
        self.src_channels = [c for c, _ in src_levels]
        self.src_strides = [s for _, s in src_levels]
        self.channels, self.strides = list(channels), list(strides)
        self.user_indices = user_indices
        self.registry = importlib.import_module(f'{scope}.registry').MODELS

    def parameters(self, path, cfg: dict) -> dict:
        """The constructor parameters of the module a config entry builds."""
        from mmengine.registry import DefaultScope
        type_name = cfg.get('type')
        with DefaultScope.overwrite_default_scope(self.scope):
            cls = self.registry.get(type_name) if isinstance(type_name, str) else type_name
        if cls is None:
            raise SwapError(f'{dotted(path)}: unknown type {type_name!r} in {self.scope}; cannot tell which of its '
                            'arguments take the backbone\'s channels')
        return constructor_parameters(cls)

    def our_level(self, src_index: int, key: str) -> int:
        stride = self.src_strides[src_index]
        if stride not in self.strides:
            raise SwapError(f'{key}: the source reads the backbone map of stride {stride} (output {src_index}), which '
                            f'the swapped backbone does not return (its strides: {tuple(self.strides)}); '
                            'choose --out-indices that include it')
        return self.strides.index(stride)

    def neck(self, path, cfg: dict) -> None:
        """A neck taking all maps (``in_channels`` a list) or one (an int)."""
        key = dotted(path)
        params = self.parameters(path, cfg)
        if 'in_channels' not in params:
            raise SwapError(f'{key}: cannot tell which argument of {cfg.get("type")} takes the backbone\'s '
                            f'channels (it has no in_channels; its arguments: {", ".join(params)}); '
                            'adapt this neck by hand')
        src_in = cfg.get('in_channels', params['in_channels'].default)
        if isinstance(src_in, (list, tuple)):
            self.multi_level_neck(path, cfg, params, list(src_in))
        elif isinstance(src_in, int):
            self.single_level(path + ('in_channels', ), src_in, cfg.get('type'))
        else:
            raise SwapError(f'{key}.in_channels is {src_in!r}; expected the width of one map or a list of widths')

    def multi_level_neck(self, path, cfg: dict, params: dict, src_in: list) -> None:
        key = dotted(path)
        if len(src_in) != len(self.src_strides):
            raise SwapError(f'{key}.in_channels lists {len(src_in)} widths but the source backbone returns '
                            f'{len(self.src_strides)} maps; fix the source config first')
        start = cfg.get('start_level', params['start_level'].default if 'start_level' in params else 0)
        if self.strides != self.src_strides:
            if 'start_level' not in params:
                raise SwapError(f'{key}.in_channels: {cfg["type"]} reads every map of the backbone (strides '
                                f'{tuple(self.src_strides)} in the source) and cannot skip any, but the swapped '
                                f'backbone returns strides {tuple(self.strides)}: the neck\'s outputs, and the '
                                'strides the heads expect, would change; choose --out-indices giving the source\'s')
            end = cfg.get('end_level', params['end_level'].default if 'end_level' in params else -1)
            if end != -1:
                raise SwapError(f'{key}.end_level is {end}: set for the source\'s levels; with --out-indices giving '
                                f'strides {tuple(self.strides)} instead of {tuple(self.src_strides)} adapt it by hand')
            used = self.src_strides[start:]
            if self.strides[-len(used):] != used:
                raise SwapError(f'{key}.start_level: {cfg["type"]} reads the maps of strides {tuple(used)} '
                                f'(from level {start}); the swapped backbone returns strides {tuple(self.strides)}, '
                                'which do not end with them; choose --out-indices that do')
            new_start = len(self.strides) - len(used)
            if new_start != start:
                self.overrides.set(path + ('start_level', ), new_start)
        self.overrides.set(path + ('in_channels', ), list(self.channels))

    def single_level(self, path, src_in: int, type_name: str) -> None:
        """An ``in_channels`` int: the consumer takes one map (the last one it is given)."""
        key = dotted(path)
        if self.user_indices and len(self.channels) > 1:
            raise SwapError(f'{key}: {type_name} takes a single map ({src_in} channels in the source), but '
                            f'--out-indices asks the backbone for {len(self.channels)}; pass one index')
        matching = [i for i, c in enumerate(self.src_channels) if c == src_in]
        src_index = matching[-1] if matching else len(self.src_channels) - 1
        level = self.our_level(src_index, key) if self.src_strides[src_index] is not None else len(self.strides) - 1
        if level != len(self.channels) - 1:
            raise SwapError(f'{key}: the source reads the backbone map of stride {self.src_strides[src_index]}, '
                            'which is not the last output of the swapped backbone; choose --out-indices ending with it')
        self.overrides.set(path, self.channels[level])

    def seg_head(self, path, cfg: dict) -> None:
        """An mmseg decode or auxiliary head reading backbone maps through ``in_index``."""
        key = dotted(path)
        params = self.parameters(path, cfg)
        if 'in_channels' not in params or 'in_channels' not in cfg:
            raise SwapError(f'{key}: cannot tell which argument of {cfg.get("type")} takes the backbone\'s channels')
        in_index = cfg.get('in_index', params['in_index'].default if 'in_index' in params else -1)
        n = len(self.src_strides)
        if isinstance(in_index, int):
            level = self.our_level(in_index % n, f'{key}.in_index')
            new_index, new_channels = level, self.channels[level]
            unchanged = level == in_index % len(self.strides)
        else:
            levels = [self.our_level(i % n, f'{key}.in_index') for i in in_index]
            new_index, new_channels = levels, [self.channels[i] for i in levels]
            unchanged = levels == [i % len(self.strides) for i in in_index]
        if not unchanged:
            self.overrides.set(path + ('in_index', ), new_index)
        if isinstance(cfg['in_channels'], (list, tuple)) != isinstance(new_channels, list):
            raise SwapError(f'{key}.in_channels is {cfg["in_channels"]!r} for in_index {in_index!r}; cannot adapt')
        self.overrides.set(path + ('in_channels', ), new_channels)


def constructor_parameters(cls: type) -> dict:
    """The named parameters of ``cls``'s constructor, including those its ``**kwargs`` pass to base classes."""
    params = {}
    for klass in cls.__mro__:
        if '__init__' not in vars(klass):
            continue
        signature = inspect.signature(klass.__init__).parameters
        params.update({k: p for k, p in signature.items() if k not in params and k != 'self'
                       and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)})
        if not any(p.kind == p.VAR_KEYWORD for p in signature.values()):
            break
    return params


def entries(model: dict, name: str) -> List[Tuple[tuple, dict]]:
    """``(path, cfg)`` of a model entry that may be one dict, a list of dicts, or absent."""
    value = model.get(name)
    if isinstance(value, dict):
        return [((name, ), value)]
    if isinstance(value, (list, tuple)):
        return [((name, i), v) for i, v in enumerate(value) if isinstance(v, dict)]
    return []


def adapt_consumers(source: Source, plan: Plan, user_indices: bool, backbone: Backbone) -> None:
    """Set the necks' and heads' arguments that take the new backbone's maps."""
    model = source.cfg.model
    if model.get('pretrained') is not None:  # mmseg passes it on to the backbone, which takes init_cfg instead
        plan.overrides.set(('pretrained', ), None)
    adapter = ConsumerAdapter(source.scope, plan.overrides, plan.src_levels, plan.channels, plan.strides,
                              user_indices)
    necks = entries(model, 'neck')
    if source.scope == 'mmpretrain':
        adapt_classifier(adapter, plan, necks, model, backbone)
    elif necks:
        adapter.neck(*necks[0])
    elif source.scope == 'mmseg':
        heads = entries(model, 'decode_head') + entries(model, 'auxiliary_head')
        if not heads:
            raise SwapError('model.decode_head: the source segmentor has no neck and no decode head to adapt')
        for path, cfg in heads:
            adapter.seg_head(path, cfg)
    else:
        heads = [k for k in model if k.endswith('head') and isinstance(model[k], dict)]
        raise SwapError(f'model.neck: the source detector has none, so its heads ({", ".join(heads)}) read the '
                        'backbone\'s maps themselves; the swap adapts detectors with a neck (FPN and the like)')


def adapt_classifier(adapter: ConsumerAdapter, plan: Plan, necks, model: dict, backbone: Backbone) -> None:
    """mmpretrain: pooling neck (added for maps, removed for class tokens) and the head's width."""
    overrides = plan.overrides
    tokens = any(s is None for s in plan.strides)
    neck_type = str(necks[0][1].get('type', '')).split('.')[-1] if necks else None
    if len(necks) > 1:
        raise SwapError('model.neck: a list of necks; the swap adapts one neck of a classifier')
    if neck_type is not None and neck_type not in POOLING_NECKS:
        adapter.neck(*necks[0])
        return
    if tokens and neck_type is not None:
        overrides.set(('neck', ), None)
        plan.notes.append(f'model.neck ({neck_type}) removed: {backbone.cls.__name__} returns its class token, '
                          'already pooled')
    elif not tokens and neck_type is None:
        overrides.set(('neck', ), dict(_delete_=True, type='GlobalAveragePooling'))  # the source's is None
        plan.notes.append('model.neck: global average pooling added between the backbone\'s map and the head')
    head = model.get('head')
    if not isinstance(head, dict):
        raise SwapError('model.head: the source classifier has no single head to adapt')
    if 'in_channels' not in adapter.parameters(('head', ), head):
        raise SwapError(f'model.head.in_channels: {head.get("type")} has no in_channels argument; adapt it by hand')
    classifier_head = (backbone.classifier_cfg.model.get('head') or {}) if backbone.classifier_cfg else {}
    if str(classifier_head.get('type', '')).endswith('DistilledLinearClsHead') and tokens:
        overrides.set(('head', 'type'), 'vitzoo.DistilledLinearClsHead')
        overrides.set(('head', 'distill_type'), 'none')
        plan.notes.append('model.head: the distilled backbone returns (class, distillation) tokens; '
                          "vitzoo.DistilledLinearClsHead averages two linear heads (distill_type='none': no teacher)")
    overrides.set(('head', 'in_channels'), plan.channels[-1])


def plan_backbone(source: Source, backbone: Backbone, out_indices: Optional[Sequence[int]],
                  backbone_args: Optional[dict], src_levels) -> Tuple[dict, str]:
    """The new ``model.backbone`` (without ``init_cfg``) and the source settings it leaves out."""
    cls = backbone.cls
    classification = source.scope == 'mmpretrain'
    args = {k: v for k, v in backbone.args.items() if k not in NOT_CARRIED}
    if not classification:
        args = {k: v for k, v in args.items() if k not in CLASSIFIER_OUTPUT_ARGS}
        args.update(cls.dense_output_options)
    args.update(backbone_args or {})
    if out_indices is not None:
        args['out_indices'] = tuple(out_indices)
    elif classification:
        if 'out_indices' not in args and 'out_type' not in args:
            args['out_indices'] = (len(output_layout(cls, args)) - 1, )
    else:
        args['out_indices'] = match_strides(cls, args, [s for _, s in src_levels])
    src_backbone = source.cfg.model.backbone
    if src_backbone.get('with_cp') and 'with_cp' not in args:
        args['with_cp'] = True
    left_out = [f'{k}={plain(src_backbone[k])!r}' for k in ('frozen_stages', 'norm_eval', 'norm_cfg')
                if k in src_backbone]
    order = ['arch', 'distilled', 'out_type', 'out_indices']
    ordered = {k: args[k] for k in order if k in args}
    ordered.update({k: v for k, v in args.items() if k not in ordered})
    return dict(_delete_=True, type=f'vitzoo.{cls.__name__}', **ordered), ', '.join(left_out)


# ------------------------------------------------------------------------------- weights


@dataclass
class Weights:
    init_cfg: Optional[dict]
    local: bool  # a local file, which the check loads
    describe: str
    from_index: bool = False  # the index's download, whose fit the check verifies without downloading


def plan_weights(backbone: Backbone, checkpoint: Optional[str]) -> Weights:
    """``init_cfg`` of the new backbone: the given checkpoint (its prefix read from it) or the index's URL."""
    from ..utils.download import is_url
    index_weights = backbone.info.weights if backbone.info is not None else None
    if checkpoint and checkpoint != index_weights:
        if is_url(checkpoint):
            return Weights(dict(type='Pretrained', checkpoint=checkpoint), False,
                           f"{checkpoint} (downloaded when training starts; its prefix found as it loads: 'backbone.' "
                           'for classifiers)')
        if not osp.isfile(checkpoint):
            raise SwapError(f'--checkpoint {checkpoint!r} does not exist (pass a file or an http(s) URL)')
        from ..models.checkpoint import CheckpointError, convert_with_layout, read_checkpoint, unwrap_state_dict
        try:
            layout, state_dict = convert_with_layout(unwrap_state_dict(read_checkpoint(checkpoint), checkpoint))
        except CheckpointError as err:
            raise SwapError(f'--checkpoint: {err}') from err
        prefix = 'backbone.' if any(k.startswith('backbone.') for k in state_dict) else ''
        return Weights(dict(type='Pretrained', checkpoint=checkpoint, prefix=prefix), True,
                       f'{checkpoint} ({layout}; prefix {prefix!r})')
    if index_weights:
        return Weights(dict(type='Pretrained', checkpoint=index_weights, prefix='backbone.'), False,
                       f"the ImageNet classifier {backbone.info.name} of vitzoo's index (prefix 'backbone.')", True)
    return Weights(None, False, '')


def no_weights_warning(backbone: Backbone) -> str:
    info = backbone.info
    if info is None:
        return (f'{backbone.spec}: no classifier of vitzoo\'s index has this backbone, so no ImageNet weights are '
                'known; the backbone starts from random weights (init_cfg=None). Pass --checkpoint PATH_OR_URL '
                'to start from a checkpoint.')
    source = info.converted_from or {}
    where = f"the official file {source['File']} from {source.get('Weights')}" if source.get('File') else \
        'its weights'
    return (f'{info.name} has no direct download: the backbone starts from random weights (init_cfg=None). '
            f'Download {where} and pass --checkpoint PATH (official, timm and mmpretrain layouts load as they are).')


def check_weights_fit(model, backbone: Backbone) -> None:
    """The index classifier's backbone tensors fit the new backbone strictly (shapes, without a download)."""
    import torch

    from ..models.checkpoint import fit_state_dict
    args = {k: v for k, v in backbone.args.items() if k not in ('type', 'init_cfg')}
    with torch.device('meta'):
        reference = backbone.cls(**args)
    new = model.backbone
    fit = fit_state_dict(new.state_dict(), reference.state_dict(), new.pretrained_missing_ok,
                         new.pretrained_unexpected_ok)
    if not fit.exact:
        raise SwapError(f'the weights of {backbone.info.name} would not load strictly into the new backbone:\n'
                        f'{fit.differences()}')


# ----------------------------------------------------------------------------- rendering


def _is_identifier_dict(value: dict) -> bool:
    return all(isinstance(k, str) and k.isidentifier() for k in value)


def format_value(value, indent: int = 0, column: Optional[int] = None) -> str:
    """A config value as Python source (``dict(...)`` for dicts) starting at ``column`` of a line
    indented by ``indent``; too long for ``LINE_WIDTH``, its items go on the following lines,
    indented 4 more, as many to a line as fit."""
    column = indent if column is None else column
    one = _one_line(value)
    if column + len(one) <= LINE_WIDTH or not isinstance(value, (dict, list, tuple)) or not value:
        return one
    inner = indent + 4
    if isinstance(value, dict):
        keyed = _is_identifier_dict(value)
        opening, closing = ('dict(', ')') if keyed else ('{', '}')
        heads = [f'{k}=' if keyed else f'{k!r}: ' for k in value]
        items = [head + format_value(v, inner, inner + len(head)) for head, v in zip(heads, value.values())]
    else:
        opening, closing = ('[', ']') if isinstance(value, list) else ('(', ')')
        items = [format_value(v, inner) for v in value]
    lines: List[List[str]] = []
    for item in items:
        last = lines[-1] if lines else None
        if (last is not None and '\n' not in item and '\n' not in last[-1]
                and inner + len(', '.join(last + [item])) + 1 <= LINE_WIDTH):
            last.append(item)
        else:
            lines.append([item])
    pad = ' ' * inner
    return opening + '\n' + ',\n'.join(pad + ', '.join(line) for line in lines) + closing


def _one_line(value) -> str:
    if isinstance(value, dict):
        if _is_identifier_dict(value):
            return 'dict(' + ', '.join(f'{k}={_one_line(v)}' for k, v in value.items()) + ')'
        return '{' + ', '.join(f'{k!r}: {_one_line(v)}' for k, v in value.items()) + '}'
    if isinstance(value, list):
        return '[' + ', '.join(_one_line(v) for v in value) + ']'
    if isinstance(value, tuple):
        return '(' + ', '.join(_one_line(v) for v in value) + (', )' if len(value) == 1 else ')')
    return repr(value)


def comment(text: str) -> str:
    """``text`` as comment lines wrapped at ``LINE_WIDTH`` columns."""
    lines = []
    for paragraph in text.split('\n'):
        indent = len(paragraph) - len(paragraph.lstrip(' '))
        words, line = paragraph.split(' ')[indent:], '#' + ' ' * indent
        for word in words:
            if len(line) + 1 + len(word) > LINE_WIDTH and line.strip('# '):
                lines.append(line)
                line = '#' + ' ' * (indent + 3)
            line += ' ' + word
        lines.append(line)
    return '\n'.join(lines)


def optimizer_recipe(backbone: Backbone, source: Source) -> Tuple[dict, str]:
    """The family's optimizer settings for the source's task, and where they come from."""
    from mmengine.config import Config
    schedule = TASK_SCHEDULES[source.scope]
    vitzoo_schedule = Config.fromfile(osp.join(configs_dir('vitzoo'), '_base_', 'schedules', schedule))
    optim = plain(vitzoo_schedule.optim_wrapper.to_dict())
    paramwise = optim.setdefault('paramwise_cfg', {})
    paramwise.update(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0)
    custom = paramwise.setdefault('custom_keys', {})
    for key in backbone.cls.no_weight_decay_keys:
        if key.strip('.') not in {k.strip('.') for k in custom}:  # the schedule may name it already
            custom[key] = dict(decay_mult=0.0)
    if not custom:
        paramwise.pop('custom_keys')
    src_optim = source.cfg.get('optim_wrapper') or {}
    optim = dict(type=src_optim.get('type', 'OptimWrapper'), **{k: v for k, v in optim.items() if k != 'type'})
    if 'loss_scale' in src_optim:
        optim['loss_scale'] = src_optim['loss_scale']
    batch = (vitzoo_schedule.get('auto_scale_lr') or {}).get('base_batch_size')
    extra = (f', nor on {", ".join(backbone.cls.no_weight_decay_keys)}' if backbone.cls.no_weight_decay_keys else '')
    why = (f"AdamW as vitzoo's {source.scope} schedule (configs/_base_/schedules/{schedule}), without weight decay "
           f'on norms, biases and 1-D parameters{extra} (the {backbone.cls.paper} recipe); lr for a total batch '
           f'of {batch} (tools/train.py --auto-scale-lr scales it); the source\'s param_scheduler stays.')
    return dict(_delete_=True, **optim), why


def describe_levels(levels: Sequence[Tuple[int, Optional[int]]]) -> str:
    """``maps of 96, 192 channels at strides 4/8`` (``class tokens of ...`` for outputs without a stride)."""
    what = 'class tokens' if any(s is None for _, s in levels) else 'maps'
    text = f'{what} of {", ".join(str(c) for c, _ in levels)} channels'
    if what == 'maps':
        text += f' at stride{"s" if len(levels) > 1 else ""} {"/".join(str(s) for _, s in levels)}'
    return text


def render(source: Source, backbone: Backbone, plan: Plan, weights: Weights, out_name: str, left_out: str,
           apply_recipe: bool) -> str:
    """The new config's text."""
    cfg = source.cfg
    header = [f'{out_name}: {source.name} with the backbone {backbone.spec}, written by tools/misc/swap_backbone.py.',
              f'Source backbone: {cfg.model.backbone.get("type")}, {describe_levels(plan.src_levels)}. '
              f'New: {plan.backbone["type"]}, {describe_levels(list(zip(plan.channels, plan.strides)))}.']
    if weights.init_cfg is not None:
        header.append(f'Weights: {weights.describe}, loaded strictly.')
    if plan.overrides.changes:
        header.append('Changed:\n' + '\n'.join('  ' + change for change in plan.overrides.changes))
    header.extend(plan.notes)
    if left_out:
        header.append(f'Not carried from the source backbone: {left_out}. vitzoo backbones normalise with LayerNorm '
                      '(norm_eval has no effect, norm_cfg does not apply) and are fine-tuned whole, as vitzoo\'s '
                      'dense configs do; set frozen_stages=k to freeze the stem and the first k stages.')
    lines = [comment('\n'.join(header)), f'_base_ = {source.base!r}']
    imports = list((cfg.get('custom_imports') or {}).get('imports', []))
    if 'vitzoo.models' not in imports:
        failed_ok = (cfg.get('custom_imports') or {}).get('allow_failed_imports', False)
        lines.append(f"custom_imports = dict(imports={imports + ['vitzoo.models']!r}, "
                     f'allow_failed_imports={failed_ok!r})')
    if cfg.get('load_from'):
        lines.append(f"load_from = None  # the source's {cfg.load_from} holds a model of the old backbone")
    init = weights.init_cfg
    if init is None:
        lines.append(comment(no_weights_warning(backbone)))
    else:
        line = f'checkpoint = {init["checkpoint"]!r}'
        lines.append(line + ('  # noqa: E501' if len(line) > LINE_WIDTH else ''))
        init = dict(init, checkpoint=_Raw('checkpoint'))
    model = dict(backbone=dict(plan.backbone, init_cfg=init), **plan.overrides.model)
    lines.append('model = ' + format_value(model, column=len('model = ')))
    optim, why = optimizer_recipe(backbone, source)
    optim_text = 'optim_wrapper = ' + format_value(optim, column=len('optim_wrapper = '))
    if apply_recipe:
        lines.append(comment('Optimizer: ' + why))
        lines.append(optim_text)
    else:
        lines.append(comment(f'Recommended optimizer (swap_backbone.py --recipe writes it): {why}'))
        lines.append('\n'.join('# ' + line for line in optim_text.split('\n')))
    return '\n'.join(lines) + '\n'


class _Raw(str):
    """A name written as is (a variable of the config), not as a string literal."""

    def __repr__(self) -> str:
        return str(self)


# -------------------------------------------------------------------------------- check


def check_config(path: str, source: Source, backbone: Backbone, weights: Weights) -> str:
    """Load the written config, build its model, load its weights strictly and run one loss step
    (with backward) and one prediction on a small random batch. Returns a summary line."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from ..models.checkpoint import CheckpointError
    from .model import build_model_from_cfg
    from .random_batch import random_batch
    scope = source.scope
    stage = 'loading the new config'
    try:
        cfg = Config.fromfile(path)
        if not weights.local:
            cfg.model.backbone.init_cfg = None
        stage = 'building the model'
        with DefaultScope.overwrite_default_scope(scope):
            model = build_model_from_cfg(cfg)
            if weights.local:
                stage = f'loading {weights.init_cfg["checkpoint"]}'
                model.init_weights()
            elif weights.from_index:
                check_weights_fit(model, backbone)
            size = CHECK_SIZE
            inputs, samples = random_batch(model, scope, 2, size, size)
            stage = f'a loss step on a random batch of 2x3x{size}x{size}'
            model.train()
            loss, _ = model.parse_losses(model(inputs, samples, mode='loss'))
            loss.backward()
            if not torch.isfinite(loss):
                raise SwapError(f'the loss of the swapped model is {loss.item()} on a random batch')
            stage = 'a prediction on the random batch'
            model.eval()
            with torch.no_grad():
                model(inputs, samples, mode='predict')
    except SwapError:
        raise
    except CheckpointError as err:
        raise SwapError(f'the new init_cfg does not load strictly: {err}') from err
    except Exception as err:  # noqa: BLE001  (any failure of the new model; say where)
        raise SwapError(f'the swapped model fails in {stage}: {type(err).__name__}: {err}') from err
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return f'built ({params:.2f} M parameters), loss {loss.item():.3f} on a random 2x3x{size}x{size} batch'


# ---------------------------------------------------------------------------------- main


@dataclass
class SwapResult:
    path: str
    text: str
    changes: List[str]
    warnings: List[str]
    check: str


def swap_backbone(src_config: str,
                  backbone: str,
                  output: str,
                  checkpoint: Optional[str] = None,
                  out_indices: Optional[Sequence[int]] = None,
                  backbone_args: Optional[Dict[str, object]] = None,
                  recipe: bool = False,
                  overwrite: bool = False) -> SwapResult:
    """Write ``output``: ``src_config`` with ``backbone`` swapped in (see the module docstring).

    Args:
        src_config: a config file, ``pkg::path`` (``vitzoo``, ``mmpretrain``, ``mmseg``, ``mmdet``)
            or a model name of vitzoo's index.
        backbone: a model name of vitzoo's index or ``TYPE:ARCH`` (``vitzoo.SVT:base``).
        output: the new config file (``.py``); never overwritten unless ``overwrite``.
        checkpoint: weights for the backbone (path or http(s) URL) instead of the index's.
        out_indices: the backbone's outputs (default: those at the source backbone's strides).
        backbone_args: other arguments of the backbone (override the carried ones).
        recipe: write the family's optimizer settings (otherwise they are a comment).

    Raises:
        SwapError: naming the argument, file or config key that stops the swap; nothing is written.
    """
    output = os.fspath(output)
    if not output.endswith('.py'):
        raise SwapError(f'-o {output!r}: a config file name ending in .py')
    if osp.exists(output) and not overwrite:
        raise SwapError(f'{output} exists; pass --overwrite to replace it')
    source = resolve_source(src_config)
    if osp.exists(output) and osp.samefile(output, source.path):
        raise SwapError(f'-o {output} is the source config itself; write the new config elsewhere')
    out_dir = osp.dirname(osp.abspath(output))
    source.base = base_reference(source, out_dir)
    spec = resolve_backbone(backbone)
    weights = plan_weights(spec, checkpoint)

    src_levels = probe_levels(source)
    try:
        backbone_cfg, left_out = plan_backbone(source, spec, out_indices, backbone_args, src_levels)
        args = {k: v for k, v in backbone_cfg.items() if k not in ('_delete_', 'type')}
        described = spec.cls.describe_outputs(**args)
    except SwapError:
        raise
    except (TypeError, ValueError) as err:  # the backbone's own argument checks
        raise SwapError(f'backbone {spec.spec} ({spec.cls.__name__}): {err}') from err
    plan = Plan(backbone_cfg, described['channels'], described['strides'], Overrides(source.cfg.model.to_dict()),
                src_levels)
    adapt_consumers(source, plan, out_indices is not None, spec)
    if weights.init_cfg is None:
        plan.warnings.append(no_weights_warning(spec))
    text = render(source, spec, plan, weights, osp.basename(output), left_out, recipe)

    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.swap_', suffix='.py', dir=out_dir)
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            summary = check_config(tmp, source, spec, weights)
        if osp.exists(output) and not overwrite:
            raise SwapError(f'{output} appeared while checking; pass --overwrite to replace it')
        os.replace(tmp, output)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return SwapResult(output, text, plan.overrides.changes, plan.warnings, summary)
