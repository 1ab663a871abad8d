"""Checkpoints: reading them, recognising and converting their layout, loading them strictly.

Every family module registers one converter with :func:`register_converter`. A converter
takes a flat state dict and returns it in vitzoo's classifier layout (``backbone.*`` plus the
head's keys) when it recognises one of its family's foreign layouts (official, timm,
mmpretrain), or ``None`` otherwise; converters built on :func:`rename_keys` name the layout they
recognised (``layout='timm'``), which error messages and logs report. A state dict already in
vitzoo's layout is recognised by no converter and passes through unchanged, so conversion is
idempotent.

Loading is strict wherever a checkpoint meets a model (:func:`load_checkpoint_to_model` for whole
models, :func:`load_pretrained` for ``init_cfg=dict(type='Pretrained')``): every tensor the model
needs must come from the checkpoint with its shape and every checkpoint tensor must be used, or a
:class:`CheckpointMismatchError` names the file, its layout and the first differing keys. Partial
loading happens only when asked for (``strict=False``) and then logs what was left out.
"""
import os
import os.path as osp
import re
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

StateDict = Dict[str, torch.Tensor]
Converter = Callable[[Mapping[str, torch.Tensor]], Optional[StateDict]]
PathLike = Union[str, os.PathLike]

_CONVERTERS: Dict[str, Converter] = {}

_WRAPPER_KEYS = ('state_dict', 'model', 'module')
_SHOWN_KEYS = 5  # keys listed per kind of difference in messages
_PRETRAINED_KEYS = ('type', 'checkpoint', 'prefix', 'map_location', 'strict')


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, or not fitting the model."""


class UnreadableCheckpointError(CheckpointError):
    """A checkpoint file that is empty, truncated, not a PyTorch file or holds no state dict."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint whose tensors do not fit the model (missing, unexpected or mis-shaped keys)."""


# ----------------------------------------------------------------------------- layouts


class ConvertedStateDict(OrderedDict):
    """A state dict in vitzoo's layout that remembers the foreign ``layout`` it came from."""

    layout: Optional[str] = None


def register_converter(family: str) -> Callable[[Converter], Converter]:
    """Decorator registering ``family``'s layout converter."""

    def register(fn: Converter) -> Converter:
        _CONVERTERS[family] = fn
        return fn

    return register


def rename_keys(state_dict: Mapping[str, torch.Tensor], rules, layout: Optional[str] = None) -> StateDict:
    """Apply ``(regex, replacement)`` rules in order to every key; ``layout`` names the source layout."""
    out = ConvertedStateDict()
    out.layout = layout
    for key, value in state_dict.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def _detect(state_dict: Mapping[str, torch.Tensor]) -> Tuple[Optional[str], Optional[str], StateDict]:
    """``(family, layout name, converted)``; ``(None, None, unchanged)`` for vitzoo's layout."""
    import vitzoo.models  # noqa: F401  (registers every family's converter)
    for family, convert in _CONVERTERS.items():
        converted = convert(state_dict)
        if converted is not None:
            return family, getattr(converted, 'layout', None), OrderedDict(converted)
    return None, None, OrderedDict(state_dict)


def detect_and_convert(state_dict: Mapping[str, torch.Tensor]) -> Tuple[Optional[str], StateDict]:
    """``(family, converted)`` for a foreign layout, ``(None, unchanged)`` for vitzoo's own."""
    family, _, converted = _detect(state_dict)
    return family, converted


def convert_with_layout(state_dict: Mapping[str, torch.Tensor]) -> Tuple[str, StateDict]:
    """``(description of the layout found, state dict in vitzoo's layout)``."""
    family, layout, converted = _detect(state_dict)
    if family is None:
        return 'vitzoo layout', converted
    return f'{family} {layout or "foreign"} layout, converted', converted


def convert_state_dict(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Convert any supported layout to vitzoo's; vitzoo state dicts come back unchanged."""
    return detect_and_convert(state_dict)[1]


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    """Keys under ``prefix`` with the prefix removed; an empty prefix keeps everything."""
    if not prefix:
        return OrderedDict(state_dict)
    return OrderedDict((k[len(prefix):], v) for k, v in state_dict.items() if k.startswith(prefix))


# ------------------------------------------------------------------------------ reading


def read_checkpoint(filename: PathLike, map_location='cpu'):
    """The object saved in a checkpoint file, with errors that name the file.

    ``filename`` is a local path, an http(s) URL (downloaded once into vitzoo's cache, see
    :func:`vitzoo.utils.resolve_checkpoint`) or another MMEngine scheme (``open-mmlab://``...).
    Raises ``FileNotFoundError`` for a missing file and :class:`UnreadableCheckpointError` for an
    empty, truncated or non-PyTorch file.
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    from ..utils.download import cached_copy_remedy, is_url, resolve_checkpoint
    name = os.fspath(filename)
    if '://' in name and not is_url(name):
        return CheckpointLoader.load_checkpoint(name, map_location=map_location, logger='silent')
    path = resolve_checkpoint(name)
    where = name if path == name else f'{name} (cached as {path})'
    remedy = cached_copy_remedy(path) or 'delete it and save or download it again'
    if osp.getsize(path) == 0:
        raise UnreadableCheckpointError(f'checkpoint {where} is empty (0 bytes): an interrupted save or '
                                        f'download? {remedy[0].upper()}{remedy[1:]}')
    try:
        return CheckpointLoader.load_checkpoint(path, map_location=map_location, logger='silent')
    except Exception as err:  # noqa: BLE001  (torch and pickle raise many types for a bad file)
        reason = str(err).strip().splitlines()[0].rstrip('.') if str(err).strip() else type(err).__name__
        raise UnreadableCheckpointError(
            f'cannot read checkpoint {where} ({osp.getsize(path)} bytes): {reason}. It is truncated or not a '
            f'file written by torch.save; {remedy}') from err


def unwrap_state_dict(checkpoint, source: Optional[PathLike] = None) -> StateDict:
    """The flat tensor dict inside a checkpoint (``state_dict``/``model`` wrappers, ``module.``).

    Raises :class:`UnreadableCheckpointError` (naming ``source``) when the checkpoint is no
    dict of named tensors: a bare tensor, another object, or a dict without any tensor.
    """
    where = f'checkpoint {os.fspath(source)}' if source is not None else 'the checkpoint'
    if isinstance(checkpoint, torch.Tensor):
        raise UnreadableCheckpointError(f'{where} holds a single tensor of shape {list(checkpoint.shape)}, not a '
                                        'state dict (a dict of named tensors, as model.state_dict() returns)')
    if not isinstance(checkpoint, Mapping):
        raise UnreadableCheckpointError(f'{where} holds a {type(checkpoint).__name__}, not a state dict '
                                        '(a dict of named tensors, as model.state_dict() returns)')
    state_dict = checkpoint
    for key in _WRAPPER_KEYS:
        if key in state_dict and isinstance(state_dict[key], Mapping):
            state_dict = state_dict[key]
            break
    tensors = OrderedDict((k, v) for k, v in state_dict.items() if isinstance(v, torch.Tensor))
    if not tensors:
        keys = ', '.join(repr(k) for k in list(state_dict)[:_SHOWN_KEYS]) or 'none'
        raise UnreadableCheckpointError(f'{where} holds no tensors (keys: {keys}); expected a state dict, '
                                        "alone or under 'state_dict' or 'model'")
    if all(k.startswith('module.') for k in tensors):
        tensors = OrderedDict((k[len('module.'):], v) for k, v in tensors.items())
    return tensors


# ------------------------------------------------------------------------------ fitting


def _matches_any(key: str, patterns: Iterable[str]) -> bool:
    return any(re.match(p, key) for p in patterns)


def _shape(tensor: torch.Tensor) -> List[int]:
    return list(tensor.shape)


@dataclass
class StateDictFit:
    """How a state dict fits a module's: keys it lacks, keys the module lacks, shapes that differ.

    ``excused_missing`` / ``excused_unexpected`` are differences the module declares legitimate
    (layers classification checkpoints never hold); they are not errors.
    """

    num_expected: int
    num_given: int
    matched: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, List[int], List[int]]] = field(default_factory=list)  # key, checkpoint, model
    excused_missing: List[str] = field(default_factory=list)
    excused_unexpected: List[str] = field(default_factory=list)
    resized: List[str] = field(default_factory=list)  # matched, resized by their module as they load

    @property
    def exact(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def num_left_out(self) -> int:
        """Tensors of the module that keep their initial values."""
        return len(self.missing) + len(self.mismatched) + len(self.excused_missing)

    @property
    def num_unused(self) -> int:
        """Tensors of the checkpoint that are not loaded."""
        return len(self.unexpected) + len(self.mismatched) + len(self.excused_unexpected)

    def differences(self) -> str:
        """The first missing / unexpected / mis-shaped keys, with counts, one kind per line."""
        lines = []
        if self.missing:
            lines.append(f'  {len(self.missing)} missing (in the model, not in the checkpoint): '
                         f'{_first(self.missing)}')
        if self.unexpected:
            lines.append(f'  {len(self.unexpected)} unexpected (in the checkpoint, not in the model): '
                         f'{_first(self.unexpected)}')
        if self.mismatched:
            shown = ', '.join(f'{k} (checkpoint {c}, model {m})' for k, c, m in self.mismatched[:_SHOWN_KEYS])
            more = f', ... ({len(self.mismatched) - _SHOWN_KEYS} more)' if len(self.mismatched) > _SHOWN_KEYS else ''
            lines.append(f'  {len(self.mismatched)} mis-shaped: {shown}{more}')
        return '\n'.join(lines)


def _first(keys: Sequence[str]) -> str:
    more = f', ... ({len(keys) - _SHOWN_KEYS} more)' if len(keys) > _SHOWN_KEYS else ''
    return ', '.join(keys[:_SHOWN_KEYS]) + more


def fit_state_dict(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor],
                   missing_ok: Sequence[str] = (), unexpected_ok: Sequence[str] = ()) -> StateDictFit:
    """Compare ``given`` (a checkpoint) with ``expected`` (``module.state_dict()``).

    BatchNorm's ``num_batches_tracked`` counters may be missing (old checkpoints lack them).
    """
    fit = StateDictFit(num_expected=len(expected), num_given=len(given))
    for key, tensor in expected.items():
        if key in given:
            if _shape(given[key]) != _shape(tensor):
                fit.mismatched.append((key, _shape(given[key]), _shape(tensor)))
            else:
                fit.matched.append(key)
        elif key.endswith('num_batches_tracked') or _matches_any(key, missing_ok):
            fit.excused_missing.append(key)
        else:
            fit.missing.append(key)
    for key in given:
        if key not in expected:
            (fit.excused_unexpected if _matches_any(key, unexpected_ok) else fit.unexpected).append(key)
    return fit


def _resized_on_load(module: nn.Module, key: str) -> bool:
    """Whether the module owning ``key`` adapts its tensors as they load (a ``_load_from_state_dict`` of
    its own, as PiT resizing its position embedding to its grid): a shape difference is its to judge."""
    path = key.rpartition('.')[0]
    try:
        owner = module.get_submodule(path)
    except AttributeError:
        return False
    return (type(owner)._load_from_state_dict is not nn.Module._load_from_state_dict
            and not type(owner).__module__.startswith('torch.'))


def _prefix_hint(given: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> str:
    """A hint when the checkpoint's keys carry a prefix the model's do not (``model.``, ``model.backbone.``)."""
    prefixes = {'.'.join(k.split('.')[:depth]) + '.' for k in given for depth in (1, 2, 3) if k.count('.') >= depth}
    best, fitting = None, 0
    for prefix in sorted(prefixes):
        count = sum(1 for k in given if k.startswith(prefix) and k[len(prefix):] in expected)
        if count > fitting:
            best, fitting = prefix, count
    if best is None:
        return ''
    return (f'\n{fitting} of its {len(given)} tensors fit once the prefix {best!r} is removed from their names '
            '(saved from a wrapper model?)')


@dataclass
class LoadReport:
    """What a load did: the source, its layout and the fit (``exact`` unless loaded partially)."""

    source: str
    layout: str
    fit: StateDictFit

    def summary(self) -> str:
        fit = self.fit
        if fit.exact:
            text = f'loaded {len(fit.matched)} of {fit.num_expected} tensors from {self.source} ({self.layout})'
            if fit.excused_missing:
                text += (f'; {len(fit.excused_missing)} that such checkpoints do not hold keep their initial values '
                         f'({_first(fit.excused_missing)})')
            if fit.resized:
                text += f'; {len(fit.resized)} resized by the model as they loaded ({_first(fit.resized)})'
            if fit.excused_unexpected:
                text += (f'; {len(fit.excused_unexpected)} checkpoint tensors this model has no use for were '
                         f'skipped ({_first(fit.excused_unexpected)})')
            return text
        return (f'PARTIAL load from {self.source} ({self.layout}): {len(fit.matched)} of {fit.num_expected} tensors '
                f'loaded, {fit.num_left_out} left at their initial values, {fit.num_unused} of the checkpoint\'s '
                f'{fit.num_given} tensors unused\n{fit.differences()}')


def load_fitted(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, layout: str,
                strict: bool = True, missing_ok: Sequence[str] = (), unexpected_ok: Sequence[str] = (),
                what: str = 'this model', hint: str = '') -> LoadReport:
    """Load ``state_dict`` into ``module`` after checking that it fits.

    With ``strict`` any difference raises :class:`CheckpointMismatchError` before a tensor is
    copied; without, the tensors that fit are loaded and the report says what was left out.
    """
    from mmengine.logging import print_log
    expected = module.state_dict()
    fit = fit_state_dict(expected, state_dict, missing_ok, unexpected_ok)
    fit.resized = [k for k, *_ in fit.mismatched if _resized_on_load(module, k)]
    fit.mismatched = [m for m in fit.mismatched if m[0] not in fit.resized]
    fit.matched += fit.resized
    name = type(module).__name__
    if not fit.matched and not fit.mismatched:
        raise CheckpointMismatchError(
            f'{name}: checkpoint {source} ({layout}) holds no weights for {what}: none of its {len(state_dict)} '
            f'tensors has the name of one of the {len(expected)} of the model (a checkpoint of another model?)\n'
            f'{fit.differences()}{_prefix_hint(state_dict, expected)}')
    if not fit.exact and (strict or not fit.matched):  # a partial load must load something
        raise CheckpointMismatchError(
            f'{name}: checkpoint {source} ({layout}) does not fit {what} ({len(fit.matched)} of the model\'s '
            f'{len(expected)} tensors fit; is it another arch, width or family?)\n{fit.differences()}'
            f'{_prefix_hint(state_dict, expected)}' + (f'\n{hint}' if hint else ''))
    try:
        result = module.load_state_dict(OrderedDict((k, state_dict[k]) for k in fit.matched), strict=False)
    except RuntimeError as err:  # a tensor its module could not resize
        raise CheckpointMismatchError(f'{name}: checkpoint {source} ({layout}) does not fit {what}: {err}') from err
    unset = sorted(set(result.missing_keys) - (set(expected) - set(fit.matched)))
    if unset or result.unexpected_keys:  # a load_state_dict hook renamed keys after the checks
        raise CheckpointMismatchError(f'{name}: loading {source} ({layout}) left {_first(unset)} unset and '
                                      f'{_first(result.unexpected_keys)} unused')
    report = LoadReport(source=source, layout=layout, fit=fit)
    print_log(f'{name}: {report.summary()}', logger='current', level=20 if fit.exact else 30)
    return report


# ------------------------------------------------------------------------------- loading


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DDP-style wrappers and test-time-augmentation models."""
    from mmengine.model import BaseTTAModel, is_model_wrapper
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def load_checkpoint_to_model(model: nn.Module, filename: PathLike, map_location='cpu', strict: bool = True,
                             hint: str = '') -> Tuple[dict, LoadReport]:
    """Load a whole-model checkpoint (any layout vitzoo converts) into ``model``.

    Returns ``(checkpoint, report)``: the object read from the file (its ``meta`` holds the class
    names) and what was loaded. ``hint`` ends the mismatch error (how to load partially).
    """
    source = os.fspath(filename)
    checkpoint = read_checkpoint(source, map_location)
    layout, state_dict = convert_with_layout(unwrap_state_dict(checkpoint, source))
    report = load_fitted(unwrap_model(model), state_dict, source, layout, strict=strict, hint=hint)
    return checkpoint, report


def load_pretrained(module: nn.Module, filename: PathLike, prefix: Optional[str] = None, map_location='cpu',
                    strict: bool = True, what: str = 'this backbone') -> LoadReport:
    """Load the part of a checkpoint under ``prefix`` into ``module`` (a backbone, usually).

    ``prefix=None`` takes ``'backbone.'`` when the (converted) checkpoint has such keys, so a
    classifier checkpoint loads into a dense model's backbone with its head dropped. The module
    may declare ``pretrained_missing_ok`` / ``pretrained_unexpected_ok`` (regexes of its keys that
    classification checkpoints never hold, and of checkpoint keys it lacks).
    """
    source = os.fspath(filename)
    checkpoint = read_checkpoint(source, map_location)
    layout, state_dict = convert_with_layout(unwrap_state_dict(checkpoint, source))
    if prefix is None:
        prefix = 'backbone.' if any(k.startswith('backbone.') for k in state_dict) else ''
    under_prefix = strip_prefix(state_dict, prefix)
    if not under_prefix:
        raise CheckpointMismatchError(
            f'{type(module).__name__}: checkpoint {source} ({layout}) holds no weights for {what} under '
            f'prefix {prefix!r} (its first keys: {_first(list(state_dict))})')
    if prefix:
        layout += f', keys under {prefix!r}'
    return load_fitted(module, under_prefix, source, layout, strict=strict,
                       missing_ok=getattr(module, 'pretrained_missing_ok', ()),
                       unexpected_ok=getattr(module, 'pretrained_unexpected_ok', ()),
                       what=what, hint='Pass init_cfg=dict(..., strict=False) to load only what fits.')


def pretrained_entry(init_cfg, owner: str) -> Tuple[Optional[dict], Optional[Union[dict, List[dict]]]]:
    """Split ``init_cfg`` into its ``Pretrained`` entry (checked) and the other initialisers."""
    entries = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg] if init_cfg else []
    pretrained = [e for e in entries if e.get('type') == 'Pretrained']
    others = [e for e in entries if e.get('type') != 'Pretrained']
    if len(pretrained) > 1:
        raise ValueError(f'{owner} init_cfg holds {len(pretrained)} Pretrained entries; one checkpoint at most')
    if not pretrained:
        return None, init_cfg
    entry = dict(pretrained[0])
    unknown = set(entry) - set(_PRETRAINED_KEYS)
    if unknown:
        raise ValueError(f'{owner} init_cfg Pretrained takes {list(_PRETRAINED_KEYS)}, got {sorted(unknown)}')
    if not entry.get('checkpoint'):
        raise ValueError(f'{owner} init_cfg Pretrained needs checkpoint= (a path or an http(s) URL)')
    if not isinstance(entry.get('strict', True), bool):
        raise TypeError(f'{owner} init_cfg Pretrained strict must be a bool, got {entry["strict"]!r}')
    if not isinstance(init_cfg, (list, tuple)):
        return entry, None
    return entry, others or None


def init_weights_with_pretrained(module, base_init_weights: Callable[[], None], default_prefix: Optional[str] = None,
                                 what: str = 'this backbone') -> None:
    """``init_weights`` of a module whose ``init_cfg`` may hold a ``Pretrained`` entry (dict or in a list).

    The other initialisers run first (through ``base_init_weights``, MMEngine's
    ``BaseModule.init_weights``), then the checkpoint loads with :func:`load_pretrained`: every
    layout vitzoo converts, strictly unless the entry says ``strict=False``. ``default_prefix``
    applies when the entry has no ``prefix`` (``None``: ``'backbone.'`` if the checkpoint has it).
    """
    init_cfg = module.init_cfg
    entry, others = pretrained_entry(init_cfg, type(module).__name__)
    if entry is None:
        base_init_weights()
        return
    module.init_cfg = others
    try:
        base_init_weights()
    finally:
        module.init_cfg = init_cfg
    load_pretrained(module, entry['checkpoint'], prefix=entry.get('prefix', default_prefix),
                    map_location=entry.get('map_location', 'cpu'), strict=entry.get('strict', True), what=what)
    module._is_init = True


# ---------------------------------------------------------------------------- converters


@contextmanager
def _no_random_init():
    """Skip ``torch.nn.init``'s fills while building models only to read their state-dict shapes."""
    fills = {name: getattr(nn.init, name) for name in dir(nn.init)
             if name.endswith('_') and not name.startswith('_') and callable(getattr(nn.init, name))}
    try:
        for name in fills:
            setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fill in fills.items():
            setattr(nn.init, name, fill)


def _candidate_models(family: str, config=None, backbone_only: bool = False):
    """``(name, module)`` of the models a converted ``family`` checkpoint may be for, built without
    random initialisation: ``config`` (a model name or config file) alone, or the classifiers of the
    index that use the family's backbone (when ``backbone_only``, the backbones of all its models of
    the family, deduplicated)."""
    import importlib

    from mmengine.registry import DefaultScope

    from ..apis.model import ModelHub, build_model_from_cfg, load_config, task_scope
    if config is not None:
        cfg, info = load_config(config)
        named = [(info.name if info else os.fspath(config), cfg)]
    else:
        pattern = re.compile(rf'(^|_){family}[-_]')
        named = [(info.name, load_config(info.name)[0]) for info in ModelHub.all() if pattern.search(info.name)
                 and (backbone_only or info.task == 'Image Classification')]
    seen = set()
    for name, cfg in named:
        backbone_cfg = dict(cfg.model.get('backbone') or {}, init_cfg=None)
        if backbone_only:
            key = repr(sorted(backbone_cfg.items()))
            if key in seen:
                continue
            seen.add(key)
            registry = importlib.import_module(f'{task_scope(cfg)}.registry').MODELS
            with _no_random_init(), DefaultScope.overwrite_default_scope(task_scope(cfg)):
                module = registry.build(backbone_cfg)
        else:
            with _no_random_init():
                module = build_model_from_cfg(cfg)
        if config is None and type(module if backbone_only else getattr(module, 'backbone', module)).__module__ \
                != f'vitzoo.models.backbones.{family}':
            continue
        yield name, module


def find_fitting_model(state_dict: Mapping[str, torch.Tensor], family: str, source: str, layout: str,
                       config=None) -> str:
    """The name of the model (``config``, else one of the index) that ``state_dict`` fits exactly.

    A state dict with ``backbone.*`` keys only is compared with the models' backbones. Raises
    :class:`CheckpointMismatchError` with the closest model's differences when none fits.
    """
    backbone_only = all(k.startswith('backbone.') for k in state_dict)
    given = strip_prefix(state_dict, 'backbone.') if backbone_only else state_dict
    closest = None
    for name, module in _candidate_models(family, config, backbone_only):
        fit = fit_state_dict(module.state_dict(), given)
        if fit.exact:
            return f'{name} (its backbone)' if backbone_only else name
        score = len(fit.missing) + len(fit.unexpected) + len(fit.mismatched)
        if closest is None or score < closest[0]:
            closest = (score, name, fit)
    if closest is None:
        raise CheckpointMismatchError(f'{source} ({layout}): no model to check it against (config {config!r})')
    _, name, fit = closest
    what = f'{name} (its backbone)' if backbone_only else name
    scope = f'the model of {config}' if config is not None else f'any {family} model of the index'
    raise CheckpointMismatchError(
        f'{source} ({layout}) does not fit {scope}; the closest, {what}, differs:\n{fit.differences()}\n'
        'For a model of your own, pass its config: --config CONFIG')


def convert_checkpoint_file(src: str, dst: str, family: str, overwrite: bool = False,
                            config=None) -> Tuple[str, int, str]:
    """Convert the checkpoint ``src`` of ``family`` to vitzoo's layout and save it as ``dst``.

    The converted state dict must fit a model exactly (:func:`find_fitting_model`: ``config``, or
    one of the index's models of the family) before anything is written. Returns ``(detected
    layout, number of tensors, model it fits)``. Refuses to overwrite an existing ``dst`` unless
    ``overwrite`` is set, and refuses a checkpoint of another family.
    """
    if os.path.exists(dst) and not overwrite:
        raise FileExistsError(f'{dst} exists; pass --overwrite to replace it')
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ValueError('the converted checkpoint must not replace its source; choose another dst')
    state_dict = unwrap_state_dict(read_checkpoint(src), src)
    detected, converted = detect_and_convert(state_dict)
    if detected is not None and detected != family:
        raise ValueError(f'{src} is a {detected} checkpoint, not {family}; use {detected}2vitzoo.py')
    layout = f'{family} (foreign layout)' if detected else 'vitzoo (already converted)'
    fits = find_fitting_model(converted, family, src, convert_with_layout(state_dict)[0], config)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save({'state_dict': converted, 'meta': {'converted_from': os.path.basename(src)}}, dst)
    return layout, len(converted), fits


def converter_cli(family: str, argv=None) -> None:
    """Command line of ``tools/model_converters/<family>2vitzoo.py``."""
    import argparse
    parser = argparse.ArgumentParser(
        description=f'Convert an official, timm or mmpretrain {family} checkpoint to vitzoo\'s layout. The '
        'result must fit a model exactly (every tensor, every shape): one of the model index, or --config.')
    parser.add_argument('src', help='source checkpoint (path or http(s) URL)')
    parser.add_argument('dst', help='where to save the converted checkpoint')
    parser.add_argument('--config', help='model name or config file of the model the checkpoint is for '
                        '(default: any model of the index that uses the family\'s backbone)')
    parser.add_argument('--overwrite', action='store_true', help='replace dst if it exists')
    args = parser.parse_args(argv)
    try:
        layout, count, fits = convert_checkpoint_file(args.src, args.dst, family, args.overwrite, args.config)
    except (OSError, ValueError, CheckpointError) as err:
        parser.exit(1, f'{parser.prog}: error: {err}\n')
    print(f'{args.src}: {layout}, {count} tensors -> {args.dst}')
    print(f'it fits {fits} exactly')
