"""Helpers shared by the tests: running the tools, writing tiny configs, comparing attention paths,
randomising references, and checking checkpoint layouts tensor by tensor."""
import copy
import functools
import json
import os
import os.path as osp
import re
import socket
import subprocess
import sys
from typing import Callable, Collection, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from unittest import mock

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


Outputs = Union[torch.Tensor, Sequence[torch.Tensor]]

# The parity bound (see assert_within_float32_error): vitzoo's float32 error against the float64 reference
# may be at most FP32_ERROR_FACTOR times the reference implementation's own float32 error, plus
# FP32_RELATIVE_FLOOR times the output's magnitude. Measured over every parity test on the default, the
# AVX2-capped, the ATen-only and the one-thread kernel paths (README "Tests"): the largest ratio seen is
# far below the factor; a miswired model (swapped norms, dropped biases) is off by 1e2-1e5 times it.
FP32_ERROR_FACTOR = 4.
FP32_RELATIVE_FLOOR = 1e-6
# vitzoo and the reference computed in float64 differ by rounding only: relative 1e-15 per operation.
FP64_RELATIVE_BOUND = 1e-9


def as_tensor_list(outputs: Outputs) -> List[torch.Tensor]:
    return [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)


def float_inputs_as(inputs: Sequence, dtype: torch.dtype) -> list:
    return [t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in inputs]


def assert_within_float32_error(ours: Outputs, reference: Outputs, reference64: Outputs,
                                ours64: Optional[Outputs] = None, factor: float = FP32_ERROR_FACTOR,
                                relative_floor: float = FP32_RELATIVE_FLOOR) -> None:
    """vitzoo's float32 outputs are as close to the float64 reference as the reference's own float32 ones.

    Per output, with ``scale = max|reference64|``: ``max|ours - reference64|`` must be at most
    ``factor * max|reference - reference64| + relative_floor * scale``. An absolute bound such as 1e-5
    is float32's own rounding on maps of magnitude 10, and which kernels run (AVX-512 or AVX2 oneDNN,
    MKL, one thread or several) moves every fp32 result by that much; the reference's own error
    measures it on the machine at hand. With ``ours64`` (vitzoo in float64), the two float64
    computations must also agree to ``FP64_RELATIVE_BOUND * scale``: the structure is checked where
    rounding cannot hide a difference (a LayerNorm eps of 1e-5 instead of 1e-6 is 1e-6 relative).
    """
    ours, reference, reference64 = map(as_tensor_list, (ours, reference, reference64))
    assert len(ours) == len(reference) == len(reference64), (len(ours), len(reference), len(reference64))
    ours64 = as_tensor_list(ours64) if ours64 is not None else [None] * len(ours)
    rows, failures = [], []
    for i, (a, r, r64, a64) in enumerate(zip(ours, reference, reference64, ours64, strict=True)):
        assert a.shape == r.shape == r64.shape, f'output {i}: shapes {a.shape}, {r.shape}, {r64.shape}'
        r64 = r64.double()
        scale = r64.abs().max().item()
        ours_error = (a.double() - r64).abs().max().item()
        reference_error = (r.double() - r64).abs().max().item()
        bound = factor * reference_error + relative_floor * scale
        row = f'output {i}: |ours - ref64| {ours_error:.3g}, |ref32 - ref64| {reference_error:.3g}, ' \
              f'bound {bound:.3g}, magnitude {scale:.3g}'
        if a64 is not None:
            fp64_gap = (a64.double() - r64).abs().max().item()
            row += f', float64 gap {fp64_gap:.3g}'
            if fp64_gap > FP64_RELATIVE_BOUND * scale:
                failures.append(f'{row} (float64 gap over {FP64_RELATIVE_BOUND:g} x magnitude)')
        if not ours_error <= bound:
            failures.append(row)
        rows.append(row)
        if os.environ.get('VITZOO_PARITY_LOG'):  # how the bound was sized: every comparison, one JSON line
            with open(os.environ['VITZOO_PARITY_LOG'], 'a') as f:
                f.write(json.dumps(dict(test=os.environ.get('PYTEST_CURRENT_TEST', ''), i=i, ours=ours_error,
                                        ref=reference_error, scale=scale,
                                        fp64=None if a64 is None else (a64.double() - r64).abs().max().item())) + '\n')
    assert not failures, 'outputs beyond float32 error:\n' + '\n'.join(failures) + '\nall:\n' + '\n'.join(rows)


def assert_parity(model: nn.Module, run_model: Callable[..., Outputs], reference: nn.Module,
                  run_reference: Callable[..., Outputs], *inputs, **bounds) -> None:
    """``run_model(model, *inputs)`` equals ``run_reference(reference, *inputs)`` to float32's own error.

    Runs both in float32 and, on float64 copies of both modules and inputs, in float64; see
    :func:`assert_within_float32_error` for the bound. ``model`` and ``reference`` may be one module.
    """
    with torch.no_grad():
        ours, theirs = run_model(model, *inputs), run_reference(reference, *inputs)
        inputs64 = float_inputs_as(inputs, torch.float64)
        ours64 = run_model(copy.deepcopy(model).double(), *inputs64)
        theirs64 = run_reference(copy.deepcopy(reference).double(), *inputs64)
    assert_within_float32_error(ours, theirs, theirs64, ours64, **bounds)


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


def run_with_reference_windows(model: nn.Module, x: torch.Tensor) -> Outputs:
    """``model(x)`` with every :class:`WindowAttention` running :func:`window_attention_reference`
    (with its own ``mask_padding``)."""
    from vitzoo.models.layers import WindowAttention
    with mock.patch.object(WindowAttention, 'forward',
                           lambda attn, t, hw: window_attention_reference(attn, t, hw, attn.mask_padding)):
        return model(x)


def official_twins_norm_eps_(mmpretrain_twins: nn.Module) -> nn.Module:
    """Give an mmpretrain Twins the LayerNorm eps of the official network (and vitzoo): 1e-5 in the patch
    embeddings and in GSA's sub-sampling, 1e-6 elsewhere; mmpretrain builds every norm with one eps."""
    for name, module in mmpretrain_twins.named_modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = 1e-5 if re.search(r'patch_embeds\.\d\.norm$|\.attn\.norm$', name) else 1e-6
    return mmpretrain_twins


def swap_norms(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A converter that swapped every block's ``norm1`` and ``norm2`` tensors."""
    swapped = {re.sub(r'\.norm([12])\.', lambda m: f'.norm{3 - int(m[1])}.', key): value
               for key, value in state.items()}
    assert swapped.keys() == state.keys() and any('.norm1.' in key for key in state), 'nothing to swap'
    return swapped


def zero_attention_biases(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A converter that dropped the attention's query/key/value biases (zeros instead)."""
    pattern = re.compile(r'\.attn\.(qkv|q|kv)\.bias$')
    assert any(pattern.search(key) for key in state), 'no attention bias'
    return {key: torch.zeros_like(value) if pattern.search(key) else value for key, value in state.items()}


# Converter bugs the parity bound must catch in every family (tests/test_models/test_<family>.py).
MISWIRINGS = {'norm1-norm2-swapped': swap_norms, 'attention-biases-zeroed': zero_attention_biases}


def assert_parity_catches_miswiring(model: nn.Module, run_model: Callable[..., Outputs], reference: nn.Module,
                                    run_reference: Callable[..., Outputs], miswiring: str, *inputs) -> None:
    """``model`` passes :func:`assert_parity`; the same model loaded through a miswired converter fails it."""
    assert_parity(model, run_model, reference, run_reference, *inputs)
    broken = copy.deepcopy(model)
    broken.load_state_dict(MISWIRINGS[miswiring](model.state_dict()), strict=True)
    try:
        assert_parity(broken, run_model, reference, run_reference, *inputs)
    except AssertionError as e:
        assert 'beyond float32 error' in str(e)
    else:
        raise AssertionError(f'the parity bound did not catch a model loaded with {miswiring}')
