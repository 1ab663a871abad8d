"""Twins-PCPVT / Twins-SVT: parameter counts, parity with timm and mmpretrain, the backbone contract."""
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from helpers import fused_eager_gap, set_mask_padding
from vitzoo.models import PCPVT, SVT, convert_state_dict
from vitzoo.registry import MODELS

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
KEYS = osp.join(REPO, 'tests', 'data', 'keys')

# (config, timm name, mmpretrain zoo key, params in M with the 1000-class head: the seed table)
VARIANTS = [
    ('twins-pcpvt-small_8xb128_in1k.py', 'twins_pcpvt_small', 'twins-pcpvt-small', 24.11),
    ('twins-pcpvt-base_8xb128_in1k.py', 'twins_pcpvt_base', 'twins-pcpvt-base', 43.83),
    ('twins-pcpvt-large_16xb64_in1k.py', 'twins_pcpvt_large', 'twins-pcpvt-large', 60.99),
    ('twins-svt-small_8xb128_in1k.py', 'twins_svt_small', 'twins-svt-small', 24.06),
    ('twins-svt-base_8xb128_in1k.py', 'twins_svt_base', 'twins-svt-base', 56.07),
    ('twins-svt-large_16xb64_in1k.py', 'twins_svt_large', 'twins-svt-large', 99.27),
]
CLS_OUT = ('backbone', 'head')


def build_classifier(config_name: str):
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'twins', config_name))
    cfg.model.backbone.drop_path_rate = 0.
    return MODELS.build(cfg.model).eval()


def features_and_logits(model, x):
    feats = model.backbone(x)
    return feats, model.head.fc(model.neck(feats)[-1])


@pytest.mark.parametrize('config_name,timm_name,_,params', VARIANTS, ids=[v[1] for v in VARIANTS])
def test_params_and_timm_parity(config_name, timm_name, _, params):
    timm = pytest.importorskip('timm')
    model = build_classifier(config_name)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == params

    ref = timm.create_model(timm_name, pretrained=False).eval()
    missing, unexpected = model.load_state_dict(ref.state_dict(), strict=True)  # converted on load
    assert not missing and not unexpected
    full = model.backbone
    full.out_indices = [0, 1, 2, 3]
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        feats = full(x)
        logits = model.head.fc(feats[-1].mean((2, 3)))
        ref_logits = ref(x)
        ref_feats = ref.forward_intermediates(x, intermediates_only=True)
    assert (logits - ref_logits).abs().max() <= 1e-5
    for i, (ours, theirs) in enumerate(zip(feats, ref_feats)):
        if i == 3:  # vitzoo's stage-4 output carries the classifier's LayerNorm, timm's does not
            theirs = torch.nn.functional.layer_norm(
                theirs.permute(0, 2, 3, 1), (theirs.shape[1], ), ref.norm.weight, ref.norm.bias,
                ref.norm.eps).permute(0, 3, 1, 2)
        assert ours.shape == theirs.shape
        assert (ours - theirs).abs().max() <= 1e-5, f'stage {i}'


@pytest.mark.parametrize('config_name,_,mmpretrain_key,__', VARIANTS, ids=[v[2] for v in VARIANTS])
def test_mmpretrain_layout_loads_strictly(config_name, _, mmpretrain_key, __):
    with open(osp.join(KEYS, 'mmpretrain_classifier_shapes.json')) as f:
        shapes = json.load(f)[mmpretrain_key]
    synthetic = {k: torch.randn(shape) for k, shape in shapes.items()}
    model = build_classifier(config_name)
    converted = convert_state_dict(synthetic)
    missing, unexpected = model.load_state_dict(converted, strict=True)
    assert not missing and not unexpected
    assert torch.equal(model.head.fc.weight, synthetic['head.fc.weight'])
    assert torch.equal(model.backbone.stages[0].patch_embed.proj.weight,
                       synthetic['backbone.patch_embeds.0.projection.weight'])
    assert convert_state_dict(converted).keys() == converted.keys()  # idempotent


@pytest.mark.parametrize('arch_cls,mm_type', [(PCPVT, 'PCPVT'), (SVT, 'SVT')])
def test_matches_mmpretrain_implementation(arch_cls, mm_type):
    """mmpretrain's own Twins with its own weights == vitzoo with those weights converted (224)."""
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    mm = MMPRETRAIN_MODELS.build(dict(
        type='mmpretrain.ImageClassifier',
        backbone=dict(type=f'mmpretrain.{mm_type}', arch='small', norm_after_stage=[False, False, False, True], qkv_bias=True,
                      norm_cfg=dict(type='LN', eps=1e-6) if mm_type == 'PCPVT' else dict(type='LN')),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=1000, in_channels=512))).eval()
    mm.init_weights()
    with open(osp.join(KEYS, 'mmpretrain_classifier_shapes.json')) as f:
        assert set(mm.state_dict()) == set(json.load(f)[f'twins-{mm_type.lower()}-small'])
    model = build_classifier(f'twins-{mm_type.lower()}-small_8xb128_in1k.py')
    model.load_state_dict(mm.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert (model(x, mode='tensor') - mm(x, mode='tensor')).abs().max() <= 1e-5


@pytest.fixture(scope='module')
def svt():
    return SVT(arch=dict(embed_dims=[16, 32, 32, 64], depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4],
                         mlp_ratios=[2, 2, 2, 2], sr_ratios=[4, 2, 2, 1], window_sizes=[7, 7, 7, 7]))


@pytest.mark.parametrize('cls', [PCPVT, SVT])
def test_odd_input_sizes(cls):
    model = cls(arch='small').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 225, 319))
    assert [tuple(o.shape[2:]) for o in outs] == [(56, 79), (28, 39), (14, 19), (7, 9)]
    assert [o.shape[1] for o in outs] == model.embed_dims


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


def test_with_cp_equal_outputs_and_grads(svt):
    x = torch.randn(2, 3, 64, 64)
    svt.train()
    outputs = []
    for with_cp in (False, True):
        svt.with_cp = with_cp
        svt.zero_grad()
        torch.manual_seed(0)
        out = svt(x)
        sum(o.square().mean() for o in out).backward()
        outputs.append(([o.detach() for o in out], {n: p.grad.clone() for n, p in svt.named_parameters()}))
    svt.with_cp = False
    (out_a, grads_a), (out_b, grads_b) = outputs
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(out_a, out_b))
    assert grads_a.keys() == grads_b.keys()
    assert all(torch.allclose(grads_a[k], grads_b[k], atol=1e-6) for k in grads_a)


def test_frozen_stages():
    model = PCPVT(arch='small', frozen_stages=2)
    model.train()
    for i, stage in enumerate(model.stages):
        frozen = i < 2
        assert all(p.requires_grad != frozen for p in stage.parameters())
        assert all(m.training != frozen for m in stage.modules())
    out = model(torch.randn(1, 3, 64, 64))
    sum(o.sum() for o in out).backward()
    assert all(p.grad is None for p in model.stages[0].parameters())
    assert all(p.grad is not None for p in model.stages[3].parameters())
    with pytest.raises(ValueError, match='frozen_stages'):
        PCPVT(arch='small', frozen_stages=-2)


def test_out_indices_and_arch_validation():
    model = PCPVT(arch='small', out_indices=(1, -1)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [128, 512]
    with pytest.raises(ValueError, match="unknown PCPVT arch 'tiny'.*base"):
        PCPVT(arch='tiny')
    with pytest.raises(ValueError, match='missing the keys'):
        SVT(arch=dict(embed_dims=[8] * 4, depths=[1] * 4, num_heads=[1] * 4, mlp_ratios=[1] * 4,
                      sr_ratios=[1] * 4))
    with pytest.raises(ValueError, match='out_indices 4 is out of range'):
        PCPVT(arch='small', out_indices=(4, ))


def test_norm_after_stage_defaults():
    assert all(isinstance(n, torch.nn.Identity) for n in PCPVT(arch='small').out_norms)
    assert all(isinstance(n, torch.nn.LayerNorm) for n in SVT(arch='small').out_norms)


def test_init_cfg_pretrained_from_foreign_layouts(tmp_path):
    timm = pytest.importorskip('timm')
    ref = timm.create_model('twins_svt_small', pretrained=False)
    official = str(tmp_path / 'alt_gvt_small.pth')
    torch.save({'model': ref.state_dict()}, official)  # the official training script's layout
    backbone = MODELS.build(dict(type='vitzoo.SVT', arch='small',
                                 init_cfg=dict(type='Pretrained', checkpoint=official, prefix='backbone.')))
    backbone.init_weights()
    assert torch.equal(backbone.stages[2].blocks[1].attn.kv.weight, ref.blocks[2][1].attn.kv.weight)
    assert torch.equal(backbone.out_norms[3].weight, ref.norm.weight)

    missing = MODELS.build(dict(type='vitzoo.SVT', arch='small',
                                init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'nope.pth'))))
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        missing.init_weights()
    other_arch = MODELS.build(dict(type='vitzoo.SVT', arch='base', init_cfg=dict(type='Pretrained', checkpoint=official)))
    with pytest.raises(RuntimeError, match='does not fit this backbone'):
        other_arch.init_weights()
