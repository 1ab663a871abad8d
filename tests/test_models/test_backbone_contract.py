"""The OpenMMLab backbone contract, tested on every row of tests/backbone_table.py.

Every backbone must: return maps of the declared channels and strides at any input size (``describe_outputs``
and ``out_channels`` tell them without a forward pass); give the same maps for any ``out_indices`` subset,
without running the stages after the last one asked for; freeze stages (no grads, eval mode); keep BatchNorms
in eval mode with ``norm_eval``; recompute its blocks with ``with_cp`` (same outputs and gradients); give
outputs and gradients as close to float64 as ATen's, with oneDNN and with the measured kernel choice; compile
as one graph; follow its declared drop-path schedule; load every tensor of a vitzoo checkpoint through
``init_cfg``; refuse bad arguments with a ValueError or TypeError naming them; build from the mmpretrain,
mmseg and mmdet scopes; and treat the images of a batch independently. The per-family test files keep what is
specific to a family.
"""
import copy
import importlib
import inspect
import re
from collections import Counter

import pytest
import torch
from mmengine.registry import DefaultScope
from torch import nn

from vitzoo.models import LVT, PCPVT, SVT, DaViT
from vitzoo.models.layers import DropPath
from vitzoo.models.linear import kernel_counts, onednn_available, onednn_linear, reset_kernel_counts
from vitzoo.registry import MODELS

from backbone_table import BACKBONES, ROWS
from helpers import assert_within_float32_error, randomize_, set_mask_padding

SIZES = [(224, 224), (225, 319), (97, 61)]
each_row = pytest.mark.parametrize('row', ROWS, ids=[row.id for row in ROWS])
each_backbone = pytest.mark.parametrize('backbone', BACKBONES, ids=[b.__name__ for b in BACKBONES])

# every test here depends on which kernels run: make test repeats them on other kernel paths
pytestmark = pytest.mark.kernel_path


def build(row, **kwargs):
    return row.backbone(**{'arch': row.arch, **row.kwargs, **kwargs})


def accepts(row, name: str) -> bool:
    return name in inspect.signature(row.backbone).parameters


def blocks_of(model) -> list:
    return [block for stage in model.stages for block in stage.blocks]


def count_calls(modules) -> Counter:
    """Counts the calls of each module's ``forward`` (by position), recomputations included (which
    forward hooks do not see)."""
    calls = Counter()
    for index, module in enumerate(modules):

        def counted(*args, forward=module.forward, index=index, **kwargs):
            calls.update([index])
            return forward(*args, **kwargs)

        module.forward = counted
    return calls


def record_outputs(modules) -> dict:
    """The tensors each module returns, per call: ``{index: [tensors of call 1, ...]}``."""
    seen = {}

    def hook(index):
        def record(module, args, output):
            tensors = [t.detach().clone() for t in (output if isinstance(output, tuple) else (output, ))
                       if isinstance(t, torch.Tensor)]
            seen.setdefault(index, []).append(tensors)
        return record

    for index, module in enumerate(modules):
        module.register_forward_hook(hook(index))
    return seen


# ----------------------------------------------------------------------------- outputs

@each_row
@pytest.mark.parametrize('size', SIZES, ids=[f'{h}x{w}' for h, w in SIZES])
def test_output_channels_strides_and_sizes(row, size):
    model = build(row).eval()
    assert row.backbone.describe_outputs(arch=row.arch, **row.kwargs) == dict(channels=list(row.channels),
                                                                               strides=list(row.strides))
    assert model.out_channels == row.channels and model.out_strides == row.strides
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert [tuple(o.shape) for o in outs] == [(1, c, h, w) for c, (h, w) in zip(row.channels, row.sizes(*size))]
    assert all(o.is_contiguous() for o in outs)
    for out, stride in zip(outs, row.strides):  # the nominal stride, within two tokens
        assert abs(out.shape[2] * stride - size[0]) <= 2 * stride and abs(out.shape[3] * stride - size[1]) <= 2 * stride


@each_row
def test_describe_outputs_of_every_zoo_arch_matches_the_built_model(row):
    cls = row.backbone
    for arch in [None, *cls.arch_zoo]:
        kwargs = dict(row.kwargs, **({} if arch is None else dict(arch=arch)))
        with torch.device('meta'):
            model = cls(**kwargs)
        described = cls.describe_outputs(**kwargs)
        assert described == dict(channels=list(model.out_channels), strides=list(model.out_strides)), arch
        assert len(described['channels']) == len(model.out_indices)
    with pytest.raises(TypeError, match='out_typ'):
        cls.describe_outputs(out_typ='pyramid')


@each_row
def test_out_indices_subsets_give_the_same_maps(row):
    full = build(row).eval()
    x = torch.randn(1, 3, 45, 37)
    with torch.no_grad():
        maps = full(x)
    n = len(row.channels)
    for subset in [(i, ) for i in range(n)] + [(0, -1), (-1, 1), -2]:
        part = build(row, out_indices=subset).eval()
        part.load_state_dict(full.state_dict(), strict=True)
        expected = sorted({i % n for i in ((subset, ) if isinstance(subset, int) else subset)})
        assert part.out_indices == expected
        assert part.out_channels == tuple(row.channels[i] for i in expected)
        assert row.backbone.describe_outputs(arch=row.arch, out_indices=subset, **row.kwargs) == dict(
            channels=list(part.out_channels), strides=[row.strides[i] for i in expected])
        stage_calls = count_calls(part.stages)
        with torch.no_grad():
            outs = part(x)
        assert len(outs) == len(expected) and all(torch.equal(o, maps[i]) for o, i in zip(outs, expected)), subset
        if subset == (0, ):  # the stages after the last output asked for do not run
            assert stage_calls[len(part.stages) - 1] == 0


# ---------------------------------------------------------------------------- training

def expected_frozen(name: str, k: int) -> bool:
    """Under ``frozen_stages=k``: the first k stages and their output norms, and the stem (every
    parameter outside the stages, the output norms and PiT's pyramid, which always trains)."""
    match = re.match(r'(stages|out_norms)\.(\d+)\.', name)
    if match:
        return int(match.group(2)) < k
    return k >= 0 and not name.startswith('pyramid.')


@each_row
@pytest.mark.parametrize('k', [0, 2, 'all'])
def test_frozen_stages(row, k):
    dropout = dict(drop_rate=0.3) if accepts(row, 'drop_rate') else {}
    k = len(row.arch['depths']) if k == 'all' else k
    model = build(row, drop_path_rate=0.5, frozen_stages=k, **dropout)
    model.train()
    for name, param in model.named_parameters():
        assert param.requires_grad is not expected_frozen(name, k), name
    for i, stage in enumerate(model.stages):
        assert all(m.training is (i >= k) for m in stage.modules()), i

    stage_outputs = record_outputs(model.stages)
    x = torch.randn(2, 3, 32, 32)
    outs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        outs.append(model(x))
    model.eval()
    with torch.no_grad():
        model(x)
    for i in range(min(k, len(model.stages))):  # frozen stages: no drop path, no dropout
        train_a, train_b, evaluated = stage_outputs[i]
        assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(train_a, train_b, evaluated)), i
    if k < len(model.stages):  # the trained stages do drop paths
        assert not torch.equal(outs[0][-1], outs[1][-1])

    loss = sum(o.square().mean() for o in outs[0])
    if loss.requires_grad:
        loss.backward()
    for name, param in model.named_parameters():
        assert (param.grad is None) is expected_frozen(name, k), name


@each_row
@pytest.mark.parametrize('norm_eval', [False, True])
def test_norm_eval_keeps_batchnorms_in_eval_mode(row, norm_eval):
    model = build(row, norm_eval=norm_eval)
    probe = nn.BatchNorm2d(4)
    model.stages[-1].add_module('probe_bn', probe)
    model.train()
    assert probe.training is not norm_eval
    assert model.stages[-1].training and all(block.training for block in blocks_of(model))
    model.eval()
    assert not probe.training


@each_row
def test_with_cp_recomputes_the_blocks_with_equal_outputs_and_gradients(row):
    plain = build(row, drop_path_rate=0.2).train()
    checkpointed = build(row, drop_path_rate=0.2, with_cp=True).train()
    checkpointed.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 40)
    results = []
    for model in (plain, checkpointed):
        calls = count_calls(blocks_of(model))
        torch.manual_seed(0)
        outs = model(x)
        forward_calls = dict(calls)
        sum(o.square().mean() for o in outs).backward()
        grads = {name: param.grad for name, param in model.named_parameters()}
        results.append(([o.detach() for o in outs], grads, forward_calls, dict(calls)))
    (outs_a, grads_a, fwd_a, total_a), (outs_b, grads_b, fwd_b, total_b) = results
    num_blocks = len(blocks_of(plain))
    assert fwd_a == fwd_b == total_a == {i: 1 for i in range(num_blocks)}
    assert total_b == {i: 2 for i in range(num_blocks)}  # each block ran again in the backward pass
    assert all(torch.equal(a, b) for a, b in zip(outs_a, outs_b, strict=True))
    assert all(g is not None for g in grads_a.values()) and grads_a.keys() == grads_b.keys()
    assert all(torch.allclose(grads_a[k], grads_b[k], rtol=1e-5, atol=1e-6) for k in grads_a)


def outputs_and_gradients(model, x) -> list:
    """A training step's outputs and every parameter's gradient, then the inference outputs (where
    the MLPs fuse their GELU)."""
    model.zero_grad()
    outs = model.train()(x)
    sum(o.square().mean() for o in outs).backward()
    with torch.no_grad():
        infer = model.eval()(x)
    return [o.detach() for o in outs] + [p.grad.clone() for p in model.parameters()] + list(infer)


@each_row
@pytest.mark.skipif(not onednn_available(), reason='PyTorch built without oneDNN')
@pytest.mark.parametrize('mode', ['onednn', 'auto'])
def test_linear_kernels_give_the_outputs_and_gradients_of_aten(row, mode):
    """oneDNN everywhere, and the kernels chosen by measurement, are as close to float64 as ATen's
    float32 (outputs and every gradient); every product ran on the kernel the mode says."""
    model = randomize_(build(row))
    x = torch.randn(2, 3, 64, 40)
    with onednn_linear(mode):
        reset_kernel_counts()
        ours = outputs_and_gradients(model, x)
        counts = kernel_counts()
    with onednn_linear('aten'):
        reference = outputs_and_gradients(model, x)
        reference64 = outputs_and_gradients(copy.deepcopy(model).double(), x.double())
    assert_within_float32_error(ours, reference, reference64)
    assert {product for product, _ in counts} == {'forward', 'forward_gelu', 'input_grad', 'weight_grad'} \
        or row.backbone is LVT  # LVT's MLPs are convolutions
    if mode == 'onednn':
        assert all(kernel != 'aten' for _, kernel in counts)


@each_row
def test_compiles_as_one_graph(row):
    """torch.compile(fullgraph=True) traces the whole forward without a graph break (dynamo only: the
    ``eager`` backend runs the captured graph), with the eager outputs."""
    torch._dynamo.reset()
    model = randomize_(build(row)).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = model(x)
        compiled = torch.compile(model, fullgraph=True, backend='eager')(x)
    for a, b in zip(compiled, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@each_row
def test_drop_path_schedule(row):
    rate = 0.3
    model = build(row, drop_path_rate=rate)
    blocks = blocks_of(model)
    rates = [block.drop_path.drop_prob for block in blocks]
    n = len(rates)
    # the family declares its rule: up to the full rate at the last block, or rate * i / n
    denominator = n - 1 if row.backbone.drop_path_reaches_rate else n
    assert rates == pytest.approx([rate * i / denominator for i in range(n)])
    assert sum(isinstance(m, DropPath) for m in model.modules()) == n  # one per block, nothing else

    x = torch.randn(2, 3, 32, 32)
    outs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        outs.append(model.train()(x)[-1])
    assert not torch.equal(*outs)  # honoured in training
    with torch.no_grad():
        assert torch.equal(model.eval()(x)[-1], model(x)[-1])
    without = build(row).train()
    without.load_state_dict(model.state_dict())
    assert all(block.drop_path.drop_prob == 0 for block in blocks_of(without))
    assert torch.equal(without(x)[-1], without(x)[-1])


# --------------------------------------------------------------------------- arguments

@each_row
@pytest.mark.parametrize('layout', ['classifier', 'backbone'])
def test_init_cfg_pretrained_loads_every_tensor(row, layout, tmp_path):
    """A vitzoo classifier checkpoint (``backbone.`` plus head keys) or a bare backbone state dict."""
    state = randomize_(build(row)).state_dict()
    path = str(tmp_path / f'{row.id}_{layout}.pth')
    if layout == 'classifier':
        classifier = {f'backbone.{k}': v for k, v in state.items()}
        classifier.update({'head.fc.weight': torch.randn(10, row.channels[-1]), 'head.fc.bias': torch.randn(10)})
        torch.save({'state_dict': classifier, 'meta': {}}, path)
        init_cfg = dict(type='Pretrained', checkpoint=path, prefix='backbone.')
    else:
        torch.save(state, path)
        init_cfg = dict(type='Pretrained', checkpoint=path)
    model = MODELS.build(dict(type=f'vitzoo.{row.backbone.__name__}', arch=row.arch, **row.kwargs,
                              init_cfg=init_cfg))
    model.init_weights()
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    differing = [k for k in state if not torch.equal(loaded[k], state[k])]
    assert not differing, differing


def invalid_arguments(row):
    """``(arguments, error, message pattern)`` every backbone must refuse at construction."""
    n = len(row.arch['depths'])
    cases = [
        (dict(drop_path_rate=1.5), ValueError, r'drop_path_rate must be in \[0, 1\], got 1.5'),
        (dict(drop_path_rate=-0.1), ValueError, r'drop_path_rate must be in \[0, 1\]'),
        (dict(drop_path_rate='0.1'), TypeError, 'drop_path_rate must be a number'),
        (dict(out_indices=()), ValueError, 'out_indices must name at least one'),
        (dict(out_indices=(len(row.channels), )), ValueError, f'out_indices {len(row.channels)} is out of range'),
        (dict(out_indices=('0', )), TypeError, 'out_indices must hold ints'),
        (dict(frozen_stages=n + 1), ValueError, rf'frozen_stages must be in -1\.\.{n}'),
        (dict(frozen_stages=-2), ValueError, 'frozen_stages must be in'),
        (dict(frozen_stages=1.0), TypeError, 'frozen_stages must be an int'),
        (dict(with_cp='False'), TypeError, 'with_cp must be a bool'),
        (dict(norm_eval=1), TypeError, 'norm_eval must be a bool'),
        (dict(arch=7), TypeError, 'arch must be a name or a dict'),
        (dict(arch='no-such-arch'), ValueError, f"unknown {row.backbone.__name__} arch 'no-such-arch'"),
        (dict(arch=dict(row.arch, bogus=1)), ValueError, r"unknown keys \['bogus'\]"),
        (dict(arch=dict(row.arch, depths=[])), ValueError, r"arch\['depths'\] must be a non-empty list"),
    ]
    for key in row.backbone.essential_keys:
        cases.append((dict(arch={k: v for k, v in row.arch.items() if k != key}), ValueError,
                      rf"missing the keys \['{key}'\]"))
    for key in row.backbone.stage_keys:
        if key in row.arch and key != 'depths':
            cases.append((dict(arch=dict(row.arch, **{key: row.arch[key][:-1]})), ValueError,
                          rf"arch\['{key}'\] has {n - 1} entries, expected {n}"))
            cases.append((dict(arch=dict(row.arch, **{key: row.arch[key][0]})), TypeError,
                          rf"arch\['{key}'\] must be a list with one entry per stage"))
    for name in ('drop_rate', 'attn_drop_rate'):
        if accepts(row, name):
            cases.append(({name: 2.0}, ValueError, rf'{name} must be in \[0, 1\], got 2.0'))
    if accepts(row, 'norm_after_stage'):
        cases.append((dict(norm_after_stage=[False, 'True'] + [False] * (n - 2)), TypeError,
                      "norm_after_stage must hold bools, got 'True'"))
        cases.append((dict(norm_after_stage=[True] * (n + 1)), ValueError,
                      f'norm_after_stage needs one bool per stage \\({n}\\)'))
    for flag in ('mask_padding', 'distilled'):
        if accepts(row, flag):
            cases.append(({flag: 'False'}, TypeError, f'{flag} must be a bool'))
    if accepts(row, 'out_type'):
        cases.append((dict(out_type='tokens'), ValueError, "out_type must be one of .*got 'tokens'"))
    return cases


@each_row
def test_invalid_arguments_are_refused_with_the_argument_named(row):
    for kwargs, error, message in invalid_arguments(row):
        with pytest.raises(error, match=message):
            build(row, **kwargs)


@each_row
@pytest.mark.parametrize('scope', ['mmpretrain', 'mmseg', 'mmdet'])
def test_builds_from_every_toolbox_scope(row, scope):
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(dict(type=f'vitzoo.{row.backbone.__name__}', arch=row.arch, **row.kwargs))
    assert type(model) is row.backbone and model.out_channels == row.channels


@each_row
def test_batch_independence(row):
    """In eval mode an image's maps do not depend on the other images of the batch (odd sizes:
    window padding, with and without its mask)."""
    model = build(row).eval()
    x = torch.randn(3, 3, 45, 37)
    has_mask = any(hasattr(m, 'mask_padding') for m in model.modules())
    for mask_padding in ([False, True] if has_mask else [False]):
        set_mask_padding(model, mask_padding)
        with torch.no_grad():
            batched = model(x)
            single = [model(x[i:i + 1]) for i in range(len(x))]
        for level, out in enumerate(batched):
            for i in range(len(x)):
                assert torch.allclose(out[i], single[i][level][0], rtol=1e-4, atol=1e-5), (mask_padding, level, i)


# -------------------------------------------------------------------------- family facts

@each_backbone
def test_family_facts(backbone):
    assert backbone.paper and backbone.flops_note.startswith(
        'with ' if backbone.paper_flops_count_attention else 'without ')
    assert backbone.paper in backbone.flops_note
    for alias, name in backbone.arch_aliases.items():
        assert name in backbone.arch_zoo and alias not in backbone.arch_zoo
        assert backbone.resolve_arch(alias.upper()) == (name, backbone.arch_zoo[name])
    if backbone.timm_names:
        timm = pytest.importorskip('timm')
        assert set(backbone.timm_names) == set(backbone.arch_zoo)
        assert set(backbone.timm_names.values()) <= set(timm.list_models())
        assert backbone.timm_name() == backbone.timm_names[backbone.zoo_name()]
    assert backbone.timm_name(arch=dict(backbone.arch_zoo[next(iter(backbone.arch_zoo))])) is None


@pytest.mark.parametrize('backbone,mm_type', [(PCPVT, 'PCPVT'), (SVT, 'SVT'), (DaViT, 'DaViT')])
def test_mmpretrain_arch_names(backbone, mm_type):
    """Every name mmpretrain's ``arch_zoo`` gives a variant vitzoo has is accepted; the others are refused."""
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    mm_zoo = MMPRETRAIN_MODELS.get(mm_type).arch_zoo
    accepted = []
    for name, settings in mm_zoo.items():
        width = settings['embed_dims'] if isinstance(settings['embed_dims'], int) else settings['embed_dims'][0]
        same = [ours for ours, arch in backbone.arch_zoo.items()
                if list(arch['depths']) == list(settings['depths'])
                and list(arch['num_heads']) == list(settings['num_heads']) and arch['embed_dims'][0] == width]
        if same:
            assert backbone.resolve_arch(name) == (same[0], backbone.arch_zoo[same[0]]), name
            accepted.append(name)
        else:
            with pytest.raises(ValueError, match=f'unknown {backbone.__name__} arch'):
                backbone.resolve_arch(name)
    assert len(accepted) == 2 * len(backbone.arch_zoo)  # each variant under its long and its short name
