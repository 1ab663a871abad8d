"""Twins-PCPVT / Twins-SVT: parameter counts, parity with timm and mmpretrain (every parameter
randomised, every output compared), every tensor of the official/timm and mmpretrain layouts,
odd input sizes against timm, padded-window masking against a written-out reference, the
backbone contract."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from vitzoo.models import PCPVT, SVT, convert_state_dict
from vitzoo.models.checkpoint import strip_prefix
from vitzoo.registry import MODELS

from helpers import (
    MISWIRINGS,
    assert_holds_every_tensor,
    assert_parity,
    assert_parity_catches_miswiring,
    build_uninitialised,
    fused_eager_gap,
    key_table,
    official_twins_norm_eps_,
    randomize_,
    run_with_reference_windows,
    set_mask_padding,
    synthetic_state_dict,
)

timm = pytest.importorskip('timm')

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# (config, timm name, official name, mmpretrain zoo key, params in M with the 1000-class head: the seed table)
VARIANTS = [
    ('twins-pcpvt-small_8xb128_in1k.py', 'twins_pcpvt_small', 'pcpvt_small_v0', 'twins-pcpvt-small', 24.11),
    ('twins-pcpvt-base_8xb128_in1k.py', 'twins_pcpvt_base', 'pcpvt_base_v0', 'twins-pcpvt-base', 43.83),
    ('twins-pcpvt-large_16xb64_in1k.py', 'twins_pcpvt_large', 'pcpvt_large_v0', 'twins-pcpvt-large', 60.99),
    ('twins-svt-small_8xb128_in1k.py', 'twins_svt_small', 'alt_gvt_small', 'twins-svt-small', 24.06),
    ('twins-svt-base_8xb128_in1k.py', 'twins_svt_base', 'alt_gvt_base', 'twins-svt-base', 56.07),
    ('twins-svt-large_16xb64_in1k.py', 'twins_svt_large', 'alt_gvt_large', 'twins-svt-large', 99.27),
]

# The official (= timm) classifier layout -> vitzoo's, written out from the two key lists.
OFFICIAL_TO_VITZOO = [
    (r'patch_embeds\.(\d)\.(proj|norm)\.(weight|bias)', r'backbone.stages.\1.patch_embed.\2.\3'),
    (r'blocks\.(\d)\.(\d+)\.(norm1|norm2|attn\.(?:q|kv|qkv|proj|sr|norm)|mlp\.fc1|mlp\.fc2)\.(weight|bias)',
     r'backbone.stages.\1.blocks.\2.\3.\4'),
    (r'pos_block\.(\d)\.proj\.0\.(weight|bias)', r'backbone.stages.\1.pos_block.proj.\2'),
    (r'norm\.(weight|bias)', r'backbone.out_norms.3.\1'),
    (r'head\.(weight|bias)', r'head.fc.\1'),
]
# mmpretrain's classifier layout (its model-zoo files) -> vitzoo's.
MMPRETRAIN_TO_VITZOO = [
    (r'backbone\.patch_embeds\.(\d)\.projection\.(weight|bias)', r'backbone.stages.\1.patch_embed.proj.\2'),
    (r'backbone\.patch_embeds\.(\d)\.norm\.(weight|bias)', r'backbone.stages.\1.patch_embed.norm.\2'),
    (r'backbone\.stages\.(\d)\.(\d+)\.(norm1|norm2|attn\.(?:q|kv|qkv|proj|sr|norm))\.(weight|bias)',
     r'backbone.stages.\1.blocks.\2.\3.\4'),
    (r'backbone\.stages\.(\d)\.(\d+)\.ffn\.layers\.0\.0\.(weight|bias)', r'backbone.stages.\1.blocks.\2.mlp.fc1.\3'),
    (r'backbone\.stages\.(\d)\.(\d+)\.ffn\.layers\.1\.(weight|bias)', r'backbone.stages.\1.blocks.\2.mlp.fc2.\3'),
    (r'backbone\.position_encodings\.(\d)\.proj\.(weight|bias)', r'backbone.stages.\1.pos_block.proj.\2'),
    (r'backbone\.norm_after_stage(\d)\.(weight|bias)', r'backbone.out_norms.\1.\2'),
    (r'head\.fc\.(weight|bias)', r'head.fc.\1'),
]


def build_classifier(config_name: str, state_dict: dict):
    """The classifier of a config, holding ``state_dict`` (converted as it loads, strictly)."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'twins', config_name))
    cfg.model.backbone.drop_path_rate = 0.
    model = build_uninitialised(lambda: MODELS.build(cfg.model))
    missing, unexpected = model.load_state_dict(state_dict, strict=True)
    assert not missing and not unexpected
    return model.eval()


def outputs(model, x) -> list:
    """A classifier's logits and every stage's map (the classifier itself returns only the last)."""
    out_indices = model.backbone.out_indices
    model.backbone.out_indices = [0, 1, 2, 3]
    try:
        maps = model.backbone(x)
    finally:
        model.backbone.out_indices = out_indices
    return [model.head(model.neck(maps)), *maps]


def timm_outputs(ref, x) -> list:
    """timm's logits and every stage's map, the last one with the classifier's norm."""
    final, maps = ref.forward_intermediates(x, norm=True)
    return [ref.forward_head(final), *maps]


@pytest.fixture(scope='module', ids=[v[1] for v in VARIANTS],
                params=[pytest.param(v, marks=pytest.mark.slow) if v[1].endswith('large') else v for v in VARIANTS])
def variant(request):
    """``(row, classifier, timm model)``: timm's model with every parameter randomised, the
    classifier from the config holding its weights (converted as they load)."""
    ref = randomize_(timm.create_model(request.param[1], pretrained=False)).eval()
    return request.param, build_classifier(request.param[0], ref.state_dict()), ref


def test_params(variant):
    row, model, _ = variant
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == row[-1]


@pytest.mark.kernel_path
def test_timm_parity(variant):
    """Logits and all four maps (the last one with the classifier's norm) equal timm's."""
    _, model, ref = variant
    assert_parity(model, outputs, ref, timm_outputs, torch.randn(1, 3, 224, 224))


@pytest.mark.parametrize('row', VARIANTS, ids=[v[2] for v in VARIANTS])
def test_official_layout_every_tensor(row):
    """The official checkpoints (timm's ``twins_*`` hold the same keys) land tensor by tensor where the key map says."""
    official = synthetic_state_dict(key_table('timm_shapes')[row[1]])
    assert set(official) == set(key_table('official_state_dict_keys')[f'twins_official.{row[2]}'])
    state = build_classifier(row[0], official).state_dict()
    assert_holds_every_tensor(state, official, OFFICIAL_TO_VITZOO)
    assert convert_state_dict(state).keys() == state.keys()  # idempotent


@pytest.mark.parametrize('row', VARIANTS, ids=[v[3] for v in VARIANTS])
def test_mmpretrain_layout_every_tensor(row):
    mmpretrain = synthetic_state_dict(key_table('mmpretrain_classifier_shapes')[row[3]])
    assert_holds_every_tensor(build_classifier(row[0], mmpretrain).state_dict(), mmpretrain, MMPRETRAIN_TO_VITZOO)


@pytest.mark.kernel_path
@pytest.mark.parametrize('mm_type', ['PCPVT', 'SVT'])
def test_matches_mmpretrain_implementation(mm_type):
    """mmpretrain's own Twins (every parameter randomised) == vitzoo with its weights converted:
    logits and all four maps at 224.

    mmpretrain builds every LayerNorm with one eps; the official network (and vitzoo) uses 1e-5
    in the patch embeddings and the sub-sampling of GSA and 1e-6 elsewhere. With randomised norms
    that alone moves the maps by ~5e-5, so mmpretrain's norms get the official eps first.
    """
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    mm = MMPRETRAIN_MODELS.build(dict(
        type='mmpretrain.ImageClassifier',
        backbone=dict(type=f'mmpretrain.{mm_type}', arch='small', out_indices=(0, 1, 2, 3),
                      norm_after_stage=[False, False, False, True], qkv_bias=True),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=1000, in_channels=512))).eval()
    official_twins_norm_eps_(randomize_(mm))
    assert set(mm.state_dict()) == set(key_table('mmpretrain_classifier_shapes')[f'twins-{mm_type.lower()}-small'])
    model = build_classifier(f'twins-{mm_type.lower()}-small_8xb128_in1k.py', mm.state_dict())

    def mm_outputs(mm, x):
        maps = mm.backbone(x)
        return [mm.head(mm.neck(maps)), *maps]

    assert_parity(model, outputs, mm, mm_outputs, torch.randn(1, 3, 224, 224))


# A narrow Twins with the published structure (patch 4/2/2/2, sub-sampling 8/4/2/1, 7x7 windows).
TINY = dict(embed_dims=[16, 32, 48, 64], depths=[2, 2, 2, 2], num_heads=[1, 2, 3, 4], mlp_ratios=[2, 2, 2, 2],
            sr_ratios=[8, 4, 2, 1])


@pytest.fixture(scope='module')
def tiny_pairs():
    """``{'PCPVT' | 'SVT': (vitzoo backbone, timm model)}``, timm's weights randomised, the classifier's
    norm on the last output (as timm's ``forward_intermediates(norm=True)``)."""
    pairs = {}
    for cls, wss in ((PCPVT, None), (SVT, [7, 7, 7, 7])):
        ref = randomize_(timm.models.twins.Twins(**{k: tuple(v) for k, v in TINY.items()}, wss=wss,
                                                 num_classes=10)).eval()
        arch = dict(TINY, window_sizes=wss) if wss else TINY
        model = cls(arch=arch, norm_after_stage=(False, False, False, True)).eval()
        model.load_state_dict(strip_prefix(convert_state_dict(ref.state_dict()), 'backbone.'), strict=True)
        pairs[cls.__name__] = model, ref
    return pairs


@pytest.mark.kernel_path
@pytest.mark.parametrize('size', [(225, 319), (97, 61), (112, 60)], ids=lambda s: f'{s[0]}x{s[1]}')
@pytest.mark.parametrize('family', ['PCPVT', 'SVT'])
def test_odd_sizes_match_timm(tiny_pairs, family, size):
    """Remainder pixels dropped, LSA windows zero-padded (one-sided at 112x60): every map equals timm's."""
    model, ref = tiny_pairs[family]
    x = torch.randn(1, 3, *size)
    assert_parity(model, lambda m, x: m(x), ref,
                  lambda r, x: r.forward_intermediates(x, norm=True, intermediates_only=True), x)
    expected = [(size[0] // s, size[1] // s) for s in (4, 8, 16, 32)]
    with torch.no_grad():
        assert [tuple(o.shape[2:]) for o in model(x)] == expected


@pytest.mark.kernel_path
@pytest.mark.parametrize('miswiring', MISWIRINGS)
@pytest.mark.parametrize('family', ['PCPVT', 'SVT'])
def test_parity_bound_catches_a_miswired_converter(tiny_pairs, family, miswiring):
    model, ref = tiny_pairs[family]
    assert_parity_catches_miswiring(model, lambda m, x: m(x), ref,
                                    lambda r, x: r.forward_intermediates(x, norm=True, intermediates_only=True),
                                    miswiring, torch.randn(1, 3, 97, 61))


@pytest.mark.kernel_path
@pytest.mark.parametrize('size', [(112, 60), (60, 112), (97, 61)], ids=['pad-right-only', 'pad-bottom-only', 'both'])
@pytest.mark.parametrize('mask_padding', [False, True])
def test_padded_windows_match_written_out_reference(tiny_pairs, mask_padding, size):
    """SVT with ``mask_padding`` == the same SVT whose LSA runs the window-by-window reference with an
    explicit key mask; 112x60 pads only the right of the stage-1 map (28x15), 60x112 only the bottom."""
    model = tiny_pairs['SVT'][0]
    set_mask_padding(model, mask_padding)
    try:
        assert_parity(model, lambda m, x: m(x), model, run_with_reference_windows, torch.randn(1, 3, *size))
    finally:
        set_mask_padding(model, False)


@pytest.fixture(scope='module')
def svt():
    return SVT(arch=dict(embed_dims=[16, 32, 32, 64], depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4],
                         mlp_ratios=[2, 2, 2, 2], sr_ratios=[4, 2, 2, 1], window_sizes=[7, 7, 7, 7]))


@pytest.mark.kernel_path
def test_fused_and_eager_attention_agree(svt):
    x = torch.randn(2, 3, 75, 101)  # maps of 18x25, 9x12, ...: LSA pads every stage
    svt.eval()
    for mask_padding in (False, True):
        set_mask_padding(svt, mask_padding)
        assert fused_eager_gap(svt, x) <= 1e-5


def test_mask_padding_only_changes_padded_maps(svt):
    svt.eval()
    x_even, x_odd = torch.randn(1, 3, 224, 224), torch.randn(1, 3, 75, 101)
    results = {}
    for flag in (False, True):
        set_mask_padding(svt, flag)
        with torch.no_grad():
            results[flag] = (svt(x_even), svt(x_odd))
    set_mask_padding(svt, False)
    assert all(torch.equal(a, b) for a, b in zip(results[False][0], results[True][0]))
    assert not torch.allclose(results[False][1][0], results[True][1][0])


def test_norm_after_stage_defaults():
    assert all(isinstance(n, torch.nn.Identity) for n in PCPVT(arch='small').out_norms)
    assert all(isinstance(n, torch.nn.LayerNorm) for n in SVT(arch='small').out_norms)


@pytest.fixture(scope='module')
def mmpretrain_tiny_svt():
    """mmpretrain's SVT classifier with the tiny arch, every parameter randomised."""
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    mm = MMPRETRAIN_MODELS.build(dict(
        type='mmpretrain.ImageClassifier',
        backbone=dict(type='mmpretrain.SVT', arch=dict(TINY, window_sizes=[7] * 4, patch_sizes=[4, 2, 2, 2],
                                                       strides=[4, 2, 2, 2]),
                      norm_after_stage=[False, False, False, True], qkv_bias=True),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=64)))
    return randomize_(mm).eval()


@pytest.mark.parametrize('layout', ['official', 'mmpretrain', 'mmpretrain-backbone'])
def test_init_cfg_pretrained_loads_every_tensor(tiny_pairs, mmpretrain_tiny_svt, layout, tmp_path):
    """A backbone's ``init_cfg`` takes the official checkpoint file (``{'model': ...}``), mmpretrain's
    classifier file and its backbone-only state dict, tensor by tensor."""
    if layout == 'official':
        foreign, rules = tiny_pairs['SVT'][1].state_dict(), OFFICIAL_TO_VITZOO
        checkpoint = {'model': foreign}
    else:
        foreign, rules = mmpretrain_tiny_svt.state_dict(), MMPRETRAIN_TO_VITZOO
        checkpoint = {'state_dict': foreign}
        if layout == 'mmpretrain-backbone':
            checkpoint = {k[len('backbone.'):]: v for k, v in foreign.items() if k.startswith('backbone.')}
            foreign = {f'backbone.{k}': v for k, v in checkpoint.items()}
    path = str(tmp_path / f'{layout}.pth')
    torch.save(checkpoint, path)
    backbone = MODELS.build(dict(type='vitzoo.SVT', arch=dict(TINY, window_sizes=[7] * 4),
                                 norm_after_stage=(False, False, False, True),
                                 init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.')))
    backbone.init_weights()
    assert_holds_every_tensor(backbone.state_dict(), foreign, rules, dropped=r'head\..*', prefix='backbone.')

    missing = MODELS.build(dict(type='vitzoo.SVT', arch=dict(TINY, window_sizes=[7] * 4),
                                init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'nope.pth'))))
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        missing.init_weights()
    wider = dict(TINY, embed_dims=[32, 64, 96, 128], window_sizes=[7] * 4)
    other_arch = MODELS.build(dict(type='vitzoo.SVT', arch=wider, init_cfg=dict(type='Pretrained', checkpoint=path)))
    with pytest.raises(RuntimeError, match=rf'{layout}\.pth.*another (?:arch|model)'):
        other_arch.init_weights()
