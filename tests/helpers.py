"""Helpers shared by the tests: running the tools, writing tiny configs, comparing attention paths,
randomising references, and checking checkpoint layouts tensor by tensor."""
import functools
import json
import os
import os.path as osp
import re
import socket
import subprocess
import sys
from typing import Callable, Collection, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from vitzoo.models import set_fused_attn

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
KEYS = osp.join(REPO, 'tests', 'data', 'keys')
NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, _BatchNorm)


def run_tool(*args, timeout: int = 600, env=None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python tools/<args>`` (or a shell script under tools/) from the repo root."""
    full_env = dict(os.environ, PYTHONPATH=REPO, PYTHON=sys.executable, **(env or {}))
    full_env['PATH'] = osp.dirname(sys.executable) + os.pathsep + full_env.get('PATH', '')
    cmd = ['bash', *args] if args[0].endswith('.sh') else [sys.executable, *args]
    proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{" ".join(cmd)} failed ({proc.returncode}):\n'
                             f'{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}')
    return proc


def load_tool(name: str):
    """``tools/<name>.py`` imported as a module (``main``, ``merge_args``...)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f'vitzoo_tool_{name.replace("/", "_")}',
                                                  osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool_in_process(monkeypatch, name: str, *args) -> None:
    """``python tools/<name>.py ARGS`` in this process, about a second cheaper than a subprocess per
    run on 2 cores (no imports); exceptions propagate instead of becoming an exit status."""
    monkeypatch.setattr(sys, 'argv', [f'{name}.py', *map(str, args)])
    load_tool(name).main()


def free_port() -> str:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


def set_mask_padding(model: nn.Module, enabled: bool) -> None:
    """Switch padded-window masking on or off in every windowed attention of ``model``."""
    for m in model.modules():
        if hasattr(m, 'mask_padding'):
            m.mask_padding = enabled


def fused_eager_gap(model: nn.Module, x: torch.Tensor, forward: Optional[Callable] = None) -> float:
    """Largest difference between ``forward(x)`` (default ``model(x)``) with fused and with eager attention.

    The output may be a tensor or a sequence of tensors; ``model`` is left on the fused path.
    """
    forward = forward or model

    def outputs():
        out = forward(x)
        return [out] if isinstance(out, torch.Tensor) else list(out)

    with torch.no_grad():
        try:
            fused = outputs()
            set_fused_attn(model, False)
            eager = outputs()
        finally:
            set_fused_attn(model, True)
    return max((a - b).abs().max().item() for a, b in zip(fused, eager, strict=True))


def digits_test_options(digits_root: str, *extra: str) -> List[str]:
    """``--cfg-options`` that point the demo config's test loader at the digits, in the main process."""
    return [f'test_dataloader.dataset.data_root={digits_root}', 'test_dataloader.num_workers=0',
            'test_dataloader.persistent_workers=False', *extra]


def tiny_cls_config(base_config: str, out_dir: str, data_root: str, img_size: int = 32,
                    num_images: int = 16, extra: str = '') -> str:
    """Write a config that trains ``base_config``'s model on a few digits images for one epoch."""
    base = base_config if osp.isabs(base_config) else osp.join(REPO, base_config)
    path = osp.join(out_dir, 'tiny_' + osp.basename(base_config))
    with open(path, 'w') as f:
        f.write(f'''
_base_ = {base!r}
data_root = {data_root!r}
data_preprocessor = dict(num_classes=10)
model = dict(head=dict(num_classes=10))
pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=({img_size}, {img_size})),
            dict(type='PackInputs')]
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False, dataset=dict(
    _delete_=True, type='CustomDataset', data_root=data_root, ann_file='meta/train.txt',
    data_prefix='train', pipeline=pipeline, indices={num_images}))
val_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False, dataset=dict(
    _delete_=True, type='CustomDataset', data_root=data_root, ann_file='meta/val.txt',
    data_prefix='val', pipeline=pipeline, indices=8))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator
train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
{extra}
''')
    return path


def toy_ade_data(val_images: int) -> str:
    """Config lines that train on 64x64 crops of the toy ADE20K scenes (batch 2, no workers) and
    validate on the first ``val_images``; the config defines ``data_root`` and ``metainfo``."""
    return f'''train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),
                  dict(type='RandomCrop', crop_size=(64, 64)), dict(type='PackSegInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),
                 dict(type='PackSegInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline,
                                   indices={val_images}))
test_dataloader = val_dataloader
'''


@functools.lru_cache(maxsize=None)
def key_table(name: str) -> dict:
    """One of the key tables in tests/data/keys (``name`` without ``.json``); see its README."""
    with open(osp.join(KEYS, f'{name}.json')) as f:
        return json.load(f)


def synthetic_state_dict(shapes: Mapping[str, Sequence[int]], seed: int = 0) -> Dict[str, torch.Tensor]:
    """Distinct random values (N(0, 1)) for every ``key -> shape`` of a key table."""
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(tuple(shape), generator=generator) for key, shape in shapes.items()}


@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0, norm_std: float = 0.1, bias_std: float = 0.02) -> nn.Module:
    """Give every parameter and floating-point buffer of ``module`` fresh, distinct random values.

    Default initialisations hide bugs: every LayerNorm is 1/0 and every bias 0, so swapped norms
    or dropped biases change nothing. The scale stays that of a trained network: norm weights
    ``1 + N(0, norm_std)``, norm biases ``N(0, norm_std)``, other biases ``N(0, bias_std)``, every
    other tensor (weights, position embeddings, tokens) normal with the standard deviation of its
    current (initialised) values, or ``bias_std`` where those are constant. BatchNorm statistics
    get means ``N(0, norm_std)`` and variances ``1 + |N(0, norm_std)|``.
    """
    generator = torch.Generator().manual_seed(seed)
    for sub in module.modules():
        is_norm = isinstance(sub, NORM_TYPES)
        for name, param in sub.named_parameters(recurse=False):
            if is_norm:
                param.normal_(1. if name == 'weight' else 0., norm_std, generator=generator)
            elif name == 'bias':
                param.normal_(0., bias_std, generator=generator)
            else:  # the scale of the initialisation, estimated on (at most) its first 2^16 values
                std = param.flatten()[:1 << 16].float().std().item() if param.numel() > 1 else 0.
                param.normal_(0., std if std > 0 else bias_std, generator=generator)
        for name, buffer in sub.named_buffers(recurse=False):
            if not buffer.is_floating_point():
                continue
            buffer.normal_(0., norm_std, generator=generator)
            if name == 'running_var':
                buffer.abs_().add_(1.)
    return module



def build_uninitialised(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` without spending time on initialisation (built on the meta device, then given
    uninitialised CPU storage): only for models that are then loaded strictly, which sets every tensor."""
    with torch.device('meta'):
        model = build()
    model.to_empty(device='cpu')
    state_keys = set(model.state_dict())
    outside = [n for n, _ in [*model.named_parameters(), *model.named_buffers()] if n not in state_keys]
    assert not outside, f'tensors a strict load would not set: {outside[:8]}'
    return model

def max_abs_diff(ours: Union[torch.Tensor, Sequence[torch.Tensor]],
                 theirs: Union[torch.Tensor, Sequence[torch.Tensor]]) -> float:
    """Largest absolute difference between two tensors or two equally long sequences of same-shaped tensors."""
    if isinstance(ours, torch.Tensor):
        ours, theirs = [ours], [theirs]
    ours, theirs = list(ours), list(theirs)
    assert len(ours) == len(theirs), f'{len(ours)} outputs vs {len(theirs)}'
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a.shape == b.shape, f'output {i}: shape {tuple(a.shape)} vs {tuple(b.shape)}'
    return max((a - b).abs().max().item() for a, b in zip(ours, theirs))


def assert_outputs_close(ours: Union[torch.Tensor, Sequence[torch.Tensor]],
                         theirs: Union[torch.Tensor, Sequence[torch.Tensor]], atol: float = 1e-5,
                         max_magnitude: float = 1e3) -> None:
    """Every output within ``atol`` of the reference, and the reference in a range where ``atol`` means something."""
    if isinstance(ours, torch.Tensor):
        ours, theirs = [ours], [theirs]
    gaps = [max_abs_diff(a, b) for a, b in zip(ours, theirs, strict=True)]
    magnitudes = [b.abs().max().item() for b in theirs]
    assert all(m <= max_magnitude for m in magnitudes), f'reference outputs too large for atol {atol}: {magnitudes}'
    assert all(g <= atol for g in gaps), f'max abs diff per output {gaps} (reference magnitudes {magnitudes})'


Rule = Tuple[str, Union[str, Callable[[re.Match], str]]]


def map_keys(keys: Collection[str], rules: Sequence[Rule], dropped: str = r'(?!)') -> Dict[str, str]:
    """``foreign key -> vitzoo key`` by rules each of which must match a whole key.

    Every key must fullmatch exactly one rule's pattern (its template or function gives the
    vitzoo key) or the ``dropped`` pattern (keys a layout holds that vitzoo deliberately ignores).
    No two keys may map to the same vitzoo key.
    """
    mapping, targets = {}, {}
    for key in keys:
        if re.fullmatch(dropped, key):
            continue
        hits = [(pattern, repl) for pattern, repl in rules if re.fullmatch(pattern, key)]
        assert len(hits) == 1, f'{key!r} matches {len(hits)} rules of the key map: {[p for p, _ in hits]}'
        pattern, repl = hits[0]
        match = re.fullmatch(pattern, key)
        target = repl(match) if callable(repl) else match.expand(repl)
        assert target not in targets, f'{key!r} and {targets[target]!r} both map to {target!r}'
        mapping[key], targets[target] = target, key
    return mapping


def assert_holds_every_tensor(state: Mapping[str, torch.Tensor], foreign: Mapping[str, torch.Tensor],
                              rules: Sequence[Rule], dropped: str = r'(?!)',
                              prefix: str = '') -> None:
    """``state`` (a vitzoo state dict) holds exactly the ``foreign`` tensors, placed by the key map.

    ``rules`` map foreign keys to vitzoo keys (see :func:`map_keys`); ``prefix`` is stripped from
    the mapped keys (``'backbone.'`` for a backbone's own state dict). Every vitzoo tensor must
    equal its foreign tensor, and every foreign tensor (except ``dropped``) must be used once.
    """
    mapping = map_keys(foreign, rules, dropped)
    outside = [v for v in mapping.values() if not v.startswith(prefix)]
    assert not outside, f'foreign tensors map outside {prefix!r}: {outside[:8]}'
    expected = {v[len(prefix):]: f for f, v in mapping.items()}
    missing, unexpected = sorted(set(state) - set(expected)), sorted(set(expected) - set(state))
    assert not missing and not unexpected, (f'vitzoo tensors no foreign key maps to: {missing[:8]}; '
                                            f'mapped keys vitzoo lacks: {unexpected[:8]}')
    wrong = [f'{v} <- {f}' for v, f in expected.items() if not torch.equal(state[v], foreign[f])]
    assert not wrong, (f'{len(wrong)} of {len(expected)} tensors differ from the foreign tensor they should hold: '
                       f'{wrong[:8]}')


def window_attention_reference(attn: nn.Module, x: torch.Tensor, size: Tuple[int, int],
                               mask_padding: bool) -> torch.Tensor:
    """Window attention written out window by window, with an explicit key mask.

    ``attn`` supplies ``window_size``, ``num_heads`` and the ``qkv``/``proj`` linears. The
    ``(B, H*W, C)`` map is zero-padded on the right and bottom to whole windows; the padded
    tokens are keys and values like any other (timm's and the official classification code's
    semantics) unless ``mask_padding``, which removes them from every window's keys.
    """
    B, N, C = x.shape
    H, W = size
    ws, heads = attn.window_size, attn.num_heads
    head_dim = C // heads
    Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
    grid = x.new_zeros(B, Hp, Wp, C)
    grid[:, :H, :W] = x.reshape(B, H, W, C)
    real = torch.zeros(Hp, Wp, dtype=torch.bool)
    real[:H, :W] = True
    out = torch.zeros_like(grid)
    for b in range(B):
        for top in range(0, Hp, ws):
            for left in range(0, Wp, ws):
                tokens = grid[b, top:top + ws, left:left + ws].reshape(ws * ws, C)
                keys_kept = real[top:top + ws, left:left + ws].reshape(ws * ws)
                q, k, v = attn.qkv(tokens).split(C, dim=-1)
                per_head = []
                for h in range(heads):
                    channels = slice(h * head_dim, (h + 1) * head_dim)
                    logits = q[:, channels] @ k[:, channels].T * head_dim**-0.5
                    if mask_padding:
                        logits[:, ~keys_kept] = float('-inf')
                    per_head.append(logits.softmax(-1) @ v[:, channels])
                out[b, top:top + ws, left:left + ws] = torch.cat(per_head, -1).reshape(ws, ws, C)
    return attn.proj(out[:, :H, :W].reshape(B, N, C))
