"""Checkpoint layouts: detection and conversion to vitzoo's layout.

Every family module registers one converter with :func:`register_converter`. A converter
takes a flat state dict and returns it in vitzoo's classifier layout (``backbone.*`` plus the
head's keys) when it recognises one of its family's foreign layouts (official, timm,
mmpretrain), or ``None`` otherwise. A state dict already in vitzoo's layout is recognised by no
converter and passes through unchanged, so conversion is idempotent.
"""
import re
from collections import OrderedDict
from typing import Callable, Dict, Mapping, Optional, Tuple

import torch

StateDict = Dict[str, torch.Tensor]
Converter = Callable[[Mapping[str, torch.Tensor]], Optional[StateDict]]

_CONVERTERS: Dict[str, Converter] = {}

_WRAPPER_KEYS = ('state_dict', 'model', 'module')


def register_converter(family: str) -> Callable[[Converter], Converter]:
    """Decorator registering ``family``'s layout converter."""

    def register(fn: Converter) -> Converter:
        _CONVERTERS[family] = fn
        return fn

    return register


def unwrap_state_dict(checkpoint: Mapping) -> StateDict:
    """The flat tensor dict inside a checkpoint (``state_dict``/``model`` wrappers, ``module.``)."""
    state_dict = checkpoint
    for key in _WRAPPER_KEYS:
        if isinstance(state_dict, Mapping) and key in state_dict and isinstance(state_dict[key], Mapping):
            state_dict = state_dict[key]
            break
    if not isinstance(state_dict, Mapping):
        raise TypeError(f'expected a state dict (a mapping of names to tensors), got {type(state_dict)}')
    if state_dict and all(k.startswith('module.') for k in state_dict):
        state_dict = {k[len('module.'):]: v for k, v in state_dict.items()}
    return OrderedDict((k, v) for k, v in state_dict.items() if isinstance(v, torch.Tensor))


def detect_and_convert(state_dict: Mapping[str, torch.Tensor]) -> Tuple[Optional[str], StateDict]:
    """``(family, converted)`` for a foreign layout, ``(None, unchanged)`` for vitzoo's own."""
    import vitzoo.models  # noqa: F401  (registers every family's converter)
    for family, convert in _CONVERTERS.items():
        converted = convert(state_dict)
        if converted is not None:
            return family, converted
    return None, OrderedDict(state_dict)


def convert_state_dict(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Convert any supported layout to vitzoo's; vitzoo state dicts come back unchanged."""
    return detect_and_convert(state_dict)[1]


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    """Keys under ``prefix`` with the prefix removed; an empty prefix keeps everything."""
    if not prefix:
        return OrderedDict(state_dict)
    return OrderedDict((k[len(prefix):], v) for k, v in state_dict.items() if k.startswith(prefix))


def rename_keys(state_dict: Mapping[str, torch.Tensor], rules) -> StateDict:
    """Apply ``(regex, replacement)`` rules in order to every key."""
    out = OrderedDict()
    for key, value in state_dict.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def convert_checkpoint_file(src: str, dst: str, family: str, overwrite: bool = False) -> Tuple[str, int]:
    """Convert the checkpoint ``src`` of ``family`` to vitzoo's layout and save it as ``dst``.

    Returns ``(detected layout, number of tensors)``. Refuses to overwrite an existing ``dst``
    unless ``overwrite`` is set, and refuses a checkpoint of another family.
    """
    import os

    from mmengine.runner.checkpoint import CheckpointLoader
    if os.path.exists(dst) and not overwrite:
        raise FileExistsError(f'{dst} exists; pass --overwrite to replace it')
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ValueError('the converted checkpoint must not replace its source; choose another dst')
    state_dict = unwrap_state_dict(CheckpointLoader.load_checkpoint(src, map_location='cpu'))
    detected, converted = detect_and_convert(state_dict)
    if detected is not None and detected != family:
        raise ValueError(f'{src} is a {detected} checkpoint, not {family}; use {detected}2vitzoo.py')
    layout = f'{family} (foreign layout)' if detected else 'vitzoo (already converted)'
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save({'state_dict': converted, 'meta': {'converted_from': os.path.basename(src)}}, dst)
    return layout, len(converted)


def converter_cli(family: str, argv=None) -> None:
    """Command line of ``tools/model_converters/<family>2vitzoo.py``."""
    import argparse
    parser = argparse.ArgumentParser(
        description=f'Convert an official, timm or mmpretrain {family} checkpoint to vitzoo\'s layout.')
    parser.add_argument('src', help='source checkpoint (path or http(s) URL)')
    parser.add_argument('dst', help='where to save the converted checkpoint')
    parser.add_argument('--overwrite', action='store_true', help='replace dst if it exists')
    args = parser.parse_args(argv)
    layout, count = convert_checkpoint_file(args.src, args.dst, family, args.overwrite)
    print(f'{args.src}: {layout}, {count} tensors -> {args.dst}')
