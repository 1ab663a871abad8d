"""DaViT: parameter counts, parity with timm (= the official network) with every parameter randomised,
every tensor of the official, timm and mmpretrain layouts against written-out key maps, padded-window
masking against a written-out reference, the backbone contract."""
import copy
import os.path as osp
import re
import runpy
import sys

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

from vitzoo.models import DaViT, convert_state_dict
from vitzoo.models.backbones.davit import convert_davit
from vitzoo.models.checkpoint import _CONVERTERS, detect_and_convert, strip_prefix
from vitzoo.registry import MODELS

from helpers import (
    MISWIRINGS,
    assert_holds_every_tensor,
    assert_parity,
    assert_parity_catches_miswiring,
    build_uninitialised,
    fused_eager_gap,
    key_table,
    randomize_,
    run_tool,
    run_with_reference_windows,
    set_mask_padding,
    tiny_cls_config,
)

timm = pytest.importorskip('timm')

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'davit', 'davit-{}_4xb256_in1k.py')

# (arch, params in M with the 1000-class head: the official/seed table)
VARIANTS = [('tiny', 28.36), ('small', 49.75), ('base', 87.95)]
MMPRETRAIN_KEY = {'tiny': 'davit-tiny', 'small': 'davit-small', 'base': 'davit-base'}
SMALL_ARCH = dict(embed_dims=[16, 32, 64, 64], depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 4])

# mmpretrain's davit_to_mmpretrain.py renaming (official -> mmpretrain), written out independently
# of vitzoo's converter.
OFFICIAL_TO_MMPRETRAIN = [
    (r'^patch_embeds\.0\.proj\.', 'backbone.patch_embed.projection.'),
    (r'^patch_embeds\.0\.norm\.', 'backbone.patch_embed.norm.'),
    (r'^patch_embeds\.(\d)\.proj\.', lambda m: f'backbone.stages.{int(m[1]) - 1}.downsample.projection.'),
    (r'^patch_embeds\.(\d)\.norm\.', lambda m: f'backbone.stages.{int(m[1]) - 1}.downsample.norm.'),
    (r'^main_blocks\.(\d+)\.(\d+)\.0\.', r'backbone.stages.\1.blocks.\2.spatial_block.'),
    (r'^main_blocks\.(\d+)\.(\d+)\.1\.', r'backbone.stages.\1.blocks.\2.channel_block.'),
    (r'\.cpe\.0\.', '.cpe1.'),
    (r'\.cpe\.1\.', '.cpe2.'),
    (r'\.mlp\.fc1\.', '.ffn.layers.0.0.'),
    (r'\.mlp\.fc2\.', '.ffn.layers.1.'),
    (r'(spatial_block)\.attn\.', r'\1.attn.w_msa.'),
    (r'^norms\.', 'backbone.norm3.'),
    (r'^head\.', 'head.fc.'),
]


def block(stage, pair, kind) -> str:
    """vitzoo's flat block list: pair ``k`` of a stage is blocks ``2k`` (spatial) and ``2k + 1`` (channel)."""
    return f'backbone.stages.{stage}.blocks.{2 * int(pair) + (kind in ("1", "channel"))}'


# Foreign layouts -> vitzoo's classifier, written out from the key lists (tests/data/keys).
BLOCK_PARTS = r'(cpe1\.proj|cpe2\.proj|norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)'
OFFICIAL_TO_VITZOO = [
    (r'patch_embeds\.(\d)\.(proj|norm)\.(weight|bias)', r'backbone.stages.\1.patch_embed.\2.\3'),
    (r'main_blocks\.(\d)\.(\d+)\.([01])\.cpe\.([01])\.proj\.(weight|bias)',
     lambda m: f'{block(m[1], m[2], m[3])}.cpe{int(m[4]) + 1}.proj.{m[5]}'),
    (r'main_blocks\.(\d)\.(\d+)\.([01])\.' + BLOCK_PARTS, lambda m: f'{block(m[1], m[2], m[3])}.{m[4]}.{m[5]}'),
    (r'norms\.(weight|bias)', r'head.norm.\1'),
    (r'head\.(weight|bias)', r'head.fc.\1'),
]
# The official dense backbone (detection/segmentation checkpoints): ``backbone.`` and one norm per output.
OFFICIAL_DENSE_TO_VITZOO = [
    (r'backbone\.' + pattern, repl) for pattern, repl in OFFICIAL_TO_VITZOO[:3]] + [
    (r'backbone\.norm(\d)\.(weight|bias)', r'backbone.out_norms.\1.\2'),
]
TIMM_TO_VITZOO = [
    (r'stem\.conv\.(weight|bias)', r'backbone.stages.0.patch_embed.proj.\1'),
    (r'stem\.norm\.(weight|bias)', r'backbone.stages.0.patch_embed.norm.\1'),
    (r'stages\.(\d)\.downsample\.conv\.(weight|bias)', r'backbone.stages.\1.patch_embed.proj.\2'),
    (r'stages\.(\d)\.downsample\.norm\.(weight|bias)', r'backbone.stages.\1.patch_embed.norm.\2'),
    (r'stages\.(\d)\.blocks\.(\d+)\.([01])\.' + BLOCK_PARTS, lambda m: f'{block(m[1], m[2], m[3])}.{m[4]}.{m[5]}'),
    (r'head\.(norm|fc)\.(weight|bias)', r'head.\1.\2'),
]
MM_BLOCK = r'backbone\.stages\.(\d)\.blocks\.(\d+)\.(spatial|channel)_block\.'
MMPRETRAIN_TO_VITZOO = [
    (r'backbone\.patch_embed\.projection\.(weight|bias)', r'backbone.stages.0.patch_embed.proj.\1'),
    (r'backbone\.patch_embed\.norm\.(weight|bias)', r'backbone.stages.0.patch_embed.norm.\1'),
    (r'backbone\.stages\.(\d)\.downsample\.projection\.(weight|bias)',
     lambda m: f'backbone.stages.{int(m[1]) + 1}.patch_embed.proj.{m[2]}'),
    (r'backbone\.stages\.(\d)\.downsample\.norm\.(weight|bias)',
     lambda m: f'backbone.stages.{int(m[1]) + 1}.patch_embed.norm.{m[2]}'),
    (MM_BLOCK + r'(cpe1\.proj|cpe2\.proj|norm1|norm2)\.(weight|bias)',
     lambda m: f'{block(*m.groups()[:3])}.{m[4]}.{m[5]}'),
    (MM_BLOCK + r'attn\.(?:w_msa\.)?(qkv|proj)\.(weight|bias)',
     lambda m: f'{block(*m.groups()[:3])}.attn.{m[4]}.{m[5]}'),
    (MM_BLOCK + r'ffn\.layers\.0\.0\.(weight|bias)', lambda m: f'{block(*m.groups()[:3])}.mlp.fc1.{m[4]}'),
    (MM_BLOCK + r'ffn\.layers\.1\.(weight|bias)', lambda m: f'{block(*m.groups()[:3])}.mlp.fc2.{m[4]}'),
    (r'backbone\.norm3\.(weight|bias)', r'head.norm.\1'),  # the zoo classifiers: the official head norm
    (r'head\.fc\.(weight|bias)', r'head.fc.\1'),
]
# mmpretrain backbones with more outputs hold one norm per output instead.
MMPRETRAIN_DENSE_TO_VITZOO = MMPRETRAIN_TO_VITZOO[:8] + [
    (r'backbone\.norm(\d)\.(weight|bias)', r'backbone.out_norms.\1.\2'),
]

def build_classifier(arch: str, registry=MODELS):
    cfg = Config.fromfile(CONFIG.format(arch))
    return registry.build(cfg.model).eval()


def official_state_dict(arch: str, ref) -> dict:
    """timm's weights under the official key names (the key list dumped from the official code)."""
    official_keys = key_table('official_state_dict_keys')[f'davit_official.DaViT_{arch}']
    to_timm = timm.models.davit.checkpoint_filter_fn({k: k for k in official_keys}, ref)
    timm_sd = ref.state_dict()
    assert set(to_timm) == set(timm_sd)
    return {official: timm_sd[timm_key] for timm_key, official in to_timm.items()}


def rename(state_dict: dict, rules) -> dict:
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def features(model, x):
    """All four (un-normalised) stage maps of a classifier built from the configs."""
    backbone = model.backbone
    out_indices = backbone.out_indices
    backbone.out_indices = [0, 1, 2, 3]
    try:
        return backbone(x)
    finally:
        backbone.out_indices = out_indices


def tame_position_convs(model) -> None:
    """Scale the conv position encodings by 0.25.

    Random weights at PyTorch's default conv init let the un-normalised residual stream grow to
    ~3e3 in stage 2 of small and base (each position conv is a gain of ~1.5); scaled, activations
    stay in the range of trained weights (|x| < 20), where fp32 parity is meaningful in absolute terms.
    """
    with torch.no_grad():
        for name, param in model.named_parameters():
            if re.search(r'\.cpe(\.\d|\d)\.proj\.weight$', name):
                param.mul_(0.25)


def load_uninitialised(arch: str, state_dict: dict):
    """The classifier of the ``arch`` config built without initialisation, loaded strictly with ``state_dict``."""
    cfg = Config.fromfile(CONFIG.format(arch))
    model = build_uninitialised(lambda: MODELS.build(cfg.model))
    missing, unexpected = model.load_state_dict(state_dict, strict=True)
    assert not missing and not unexpected
    return model.eval()


def build_pair(arch: str):
    """timm's model with every parameter randomised and the vitzoo classifier from the config holding
    its weights (converted as they load)."""
    ref = randomize_(timm.create_model(f'davit_{arch}', pretrained=False)).eval()
    tame_position_convs(ref)
    return load_uninitialised(arch, ref.state_dict()), ref


@pytest.fixture(scope='module')
def tiny():
    return build_pair('tiny')


@pytest.fixture(scope='module', params=VARIANTS, ids=[v[0] for v in VARIANTS])
def variant(request):
    arch, params = request.param
    model, ref = request.getfixturevalue('tiny') if arch == 'tiny' else build_pair(arch)
    return arch, params, model, ref


def test_params(variant):
    arch, params, model, _ = variant
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == params


@pytest.mark.kernel_path
def test_timm_parity(variant):
    _, _, model, ref = variant

    def ours(model, x):
        feats = features(model, x)
        return [model.head(model.neck(feats[-1:])), *feats]

    def theirs(ref, x):
        final, feats = ref.forward_intermediates(x)
        return [ref.forward_head(final), *feats]

    assert_parity(model, ours, ref, theirs, torch.randn(1, 3, 224, 224))


def test_timm_layout_every_tensor(variant):
    _, _, model, ref = variant
    assert_holds_every_tensor(model.state_dict(), ref.state_dict(), TIMM_TO_VITZOO)


def test_official_layout_every_tensor(variant):
    arch, _, _, ref = variant
    official = official_state_dict(arch, ref)
    assert detect_and_convert(official)[0] == 'davit'
    assert_holds_every_tensor(load_uninitialised(arch, official).state_dict(), official, OFFICIAL_TO_VITZOO)


def test_mmpretrain_layout_every_tensor(variant):
    """mmpretrain's zoo files hold the official weights under its own names."""
    arch, _, model, ref = variant
    shapes = key_table('mmpretrain_classifier_shapes')[MMPRETRAIN_KEY[arch]]
    mmpretrain = rename(official_state_dict(arch, ref), OFFICIAL_TO_MMPRETRAIN)
    assert {k: list(v.shape) for k, v in mmpretrain.items()} == shapes
    assert_holds_every_tensor(load_uninitialised(arch, mmpretrain).state_dict(), mmpretrain, MMPRETRAIN_TO_VITZOO)
    backbone_only = {k[len('backbone.'):]: v for k, v in mmpretrain.items() if k.startswith('backbone.')}
    assert_holds_every_tensor(convert_davit(backbone_only), {f'backbone.{k}': v for k, v in backbone_only.items()},
                              MMPRETRAIN_TO_VITZOO)


@pytest.fixture(scope='module')
def small_pair():
    """A small custom arch in timm (the official network, every parameter randomised) and in vitzoo,
    with the same weights."""
    ref = randomize_(timm.models.davit.DaVit(**{k: tuple(v) for k, v in SMALL_ARCH.items()}, num_classes=0)).eval()
    model = DaViT(arch=SMALL_ARCH, norm_after_stage=False).eval()
    model.load_state_dict(strip_prefix(convert_state_dict(ref.state_dict()), 'backbone.'), strict=True)
    return model, ref


@pytest.mark.kernel_path
@pytest.mark.parametrize('size', [(225, 230), (97, 61), (32, 32)])
def test_odd_sizes_match_the_official_network(small_pair, size):
    model, ref = small_pair
    x = torch.randn(1, 3, *size)
    assert_parity(model, lambda m, x: m(x), ref, lambda r, x: r.forward_intermediates(x, intermediates_only=True), x)
    if size == (225, 230):
        with torch.no_grad():
            assert [tuple(o.shape[2:]) for o in model(x)] == [(57, 58), (29, 29), (15, 15), (8, 8)]


@pytest.mark.kernel_path
@pytest.mark.parametrize('miswiring', MISWIRINGS)
def test_parity_bound_catches_a_miswired_converter(small_pair, miswiring):
    model, ref = small_pair
    assert_parity_catches_miswiring(model, lambda m, x: m(x), ref,
                                    lambda r, x: r.forward_intermediates(x, intermediates_only=True),
                                    miswiring, torch.randn(1, 3, 97, 61))


def test_fp64_parity_at_odd_size(small_pair):
    model, ref = (copy.deepcopy(m).double() for m in small_pair)
    x = torch.randn(2, 3, 97, 61, dtype=torch.float64)
    with torch.no_grad():
        pairs = zip(model(x), ref.forward_intermediates(x, intermediates_only=True))
        assert all((a - b).abs().max() <= 1e-12 for a, b in pairs)


@pytest.mark.kernel_path
def test_matches_mmpretrain_implementation_only_with_its_two_deviations_fixed():
    """mmpretrain's own DaViT (every parameter randomised) with its own weights: vitzoo gives the
    official network's outputs, which equal mmpretrain's (logits and last map) once its stem padding
    ('same' = 1/2 instead of 3/3) and its head order (norm -> pool instead of pool -> norm) follow
    the official model."""
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    arch = dict(embed_dims=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8])
    mm = MMPRETRAIN_MODELS.build(dict(
        type='mmpretrain.ImageClassifier', backbone=dict(type='mmpretrain.DaViT', arch=arch),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=128))).eval()
    mm.init_weights()
    randomize_(mm)
    model = MODELS.build(dict(
        type='vitzoo.ImageClassifier',
        backbone=dict(type='vitzoo.DaViT', arch=dict(arch, embed_dims=[16, 32, 64, 128]), out_indices=(3, ),
                      norm_after_stage=False),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='vitzoo.NormLinearClsHead', num_classes=10, in_channels=128)))
    model.eval().load_state_dict(mm.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224)  # maps of 56, 28, 14, 7: mmpretrain shrinks windows on smaller maps
    with torch.no_grad():
        as_configured = mm(x, mode='tensor')
        assert (model(x, mode='tensor') - as_configured).abs().max() > 1e-3
    mm.backbone.patch_embed.adaptive_padding = None
    mm.backbone.patch_embed.projection.padding = (3, 3)
    norm3, mm.backbone.norm3 = mm.backbone.norm3, torch.nn.Identity()
    mm.add_module('official_head_norm', norm3)

    def fixed(mm, x):
        mm_map = mm.backbone(x)[-1]
        norm = mm.official_head_norm
        return [mm.head.fc(F.layer_norm(mm_map.mean((2, 3)), (128, ), norm.weight, norm.bias, norm.eps)), mm_map]

    assert_parity(model, lambda m, x: [m(x, mode='tensor'), m.backbone(x)[-1]], mm, fixed, x)


def test_official_dense_layout_via_init_cfg(tiny, tmp_path):
    """The official detection/segmentation backbone: ``backbone.{patch_embeds,main_blocks,norm0..3}``."""
    model, ref = tiny
    official = official_state_dict('tiny', ref)
    dense = {f'backbone.{k}': v for k, v in official.items() if not k.startswith(('norms.', 'head.'))}
    norms = {f'backbone.norm{i}.{p}': torch.randn(dim) for i, dim in enumerate([96, 192, 384, 768])
             for p in ('weight', 'bias')}
    path = str(tmp_path / 'mask_rcnn_davit_tiny.pth')
    torch.save({'state_dict': {**dense, **norms, 'neck.lateral_convs.0.conv.weight': torch.zeros(1)}}, path)
    backbone = MODELS.build(dict(type='vitzoo.DaViT', arch='tiny',
                                 init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.')))
    backbone.init_weights()
    assert_holds_every_tensor(backbone.state_dict(), {**dense, **norms}, OFFICIAL_DENSE_TO_VITZOO, prefix='backbone.')


def test_mmpretrain_dense_layout_via_init_cfg(tiny, tmp_path):
    """mmpretrain's DaViT with four outputs: ``backbone.norm0..3`` are the output norms."""
    _, ref = tiny
    mmpretrain = rename(official_state_dict('tiny', ref), OFFICIAL_TO_MMPRETRAIN)
    dense = {k: v for k, v in mmpretrain.items() if k.startswith('backbone.') and not k.startswith('backbone.norm3.')}
    dense.update({f'backbone.norm{i}.{p}': torch.randn(dim) for i, dim in enumerate([96, 192, 384, 768])
                  for p in ('weight', 'bias')})
    path = str(tmp_path / 'davit_tiny_mmpretrain_dense.pth')
    torch.save({'state_dict': dense}, path)
    backbone = MODELS.build(dict(type='vitzoo.DaViT', arch='tiny',
                                 init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.')))
    backbone.init_weights()
    assert_holds_every_tensor(backbone.state_dict(), dense, MMPRETRAIN_DENSE_TO_VITZOO, prefix='backbone.')


def test_conversion_is_idempotent_and_specific(tiny):
    model, ref = tiny
    ours = model.state_dict()
    assert convert_davit(ours) is None
    assert detect_and_convert(ours)[0] is None
    for layout in (ref.state_dict(), official_state_dict('tiny', ref)):
        family, converted = detect_and_convert(layout)
        assert family == 'davit' and converted.keys() == ours.keys()
        assert convert_state_dict(converted).keys() == converted.keys()
    mmpretrain = rename(official_state_dict('tiny', ref), OFFICIAL_TO_MMPRETRAIN)
    dense = {k: v for k, v in mmpretrain.items() if k.startswith('backbone.')}  # mmpretrain, out_indices 0..3
    dense.update({f'backbone.norm{i}.{p}': torch.zeros(c)
                  for i, c in enumerate([96, 192, 384]) for p in ('weight', 'bias')})
    assert convert_davit(dense).keys() == {k for k in ours if k.startswith('backbone.')} | {
        f'backbone.out_norms.{i}.{p}' for i in range(4) for p in ('weight', 'bias')}
    for layout in (ref.state_dict(), official_state_dict('tiny', ref), mmpretrain, ours):
        assert all(fn(layout) is None for family, fn in _CONVERTERS.items() if family != 'davit')
    tables = ['official_state_dict_keys', 'timm_shapes', 'mmpretrain_classifier_shapes', 'mmpretrain_state_dict_keys',
              'lvt_official_shapes']
    for table in tables:
        for name, keys in key_table(table).items():
            if 'davit' not in name.lower():
                assert convert_davit({k: torch.empty(0) for k in keys}) is None, name
    twins_vitzoo = MODELS.build(dict(type='vitzoo.SVT', arch=dict(
        embed_dims=[8] * 4, depths=[2] * 4, num_heads=[1] * 4, mlp_ratios=[1] * 4, sr_ratios=[1] * 4,
        window_sizes=[7] * 4))).state_dict()
    assert convert_davit({f'backbone.{k}': v for k, v in twins_vitzoo.items()}) is None


def test_converter_tool(tiny, tmp_path, monkeypatch, capsys):
    _, ref = tiny
    src, dst = tmp_path / 'davit_tiny.pth', tmp_path / 'out' / 'davit_tiny_vitzoo.pth'
    torch.save({'state_dict': official_state_dict('tiny', ref)}, src)
    monkeypatch.setattr(sys, 'argv', ['davit2vitzoo.py', str(src), str(dst)])
    runpy.run_path(osp.join(REPO, 'tools', 'model_converters', 'davit2vitzoo.py'), run_name='__main__')
    assert 'davit (foreign layout), 212 tensors' in capsys.readouterr().out
    converted = torch.load(dst, map_location='cpu')['state_dict']
    assert_holds_every_tensor(converted, official_state_dict('tiny', ref), OFFICIAL_TO_VITZOO)


@pytest.fixture(scope='module')
def small():
    return randomize_(DaViT(arch=SMALL_ARCH))


@pytest.mark.kernel_path
def test_fused_and_eager_attention_agree(small):
    small.eval()
    x = torch.randn(2, 3, 97, 61)  # windows pad in every stage
    for mask_padding in (False, True):
        set_mask_padding(small, mask_padding)
        assert fused_eager_gap(small, x) <= 1e-5
    set_mask_padding(small, False)


def test_channel_attention_operand_roles(small):
    """softmax(k^T v * (C/G)^-0.5) applied to q, written out as in the official code."""
    attn = small.stages[2].blocks[1].attn
    x = torch.randn(2, 10, 64)
    B, N, C = x.shape
    with torch.no_grad():
        q, k, v = attn.qkv(x).reshape(B, N, 3, 4, C // 4).permute(2, 0, 3, 1, 4).unbind(0)
        weights = ((k * (C // 4)**-0.5).transpose(-1, -2) @ v).softmax(-1)
        expected = attn.proj((weights @ q.transpose(-1, -2)).transpose(-1, -2).transpose(1, 2).reshape(B, N, C))
        assert (attn(x, (2, 5)) - expected).abs().max() <= 1e-6


@pytest.mark.kernel_path
@pytest.mark.parametrize('size', [(112, 60), (60, 112), (97, 61)], ids=['pad-right-only', 'pad-bottom-only', 'both'])
@pytest.mark.parametrize('mask_padding', [False, True])
def test_padded_windows_match_written_out_reference(small, mask_padding, size):
    """DaViT with ``mask_padding`` == the same DaViT whose window attention runs the window-by-window
    reference with an explicit key mask; 112x60 pads only the right of the stage-1 map (28x15),
    60x112 only the bottom."""
    small.eval()
    set_mask_padding(small, mask_padding)
    try:
        assert_parity(small, lambda m, x: m(x), small, run_with_reference_windows, torch.randn(1, 3, *size))
    finally:
        set_mask_padding(small, False)


def test_mask_padding_only_changes_padded_maps():
    model = DaViT(arch=SMALL_ARCH, mask_padding=True).eval()
    plain = DaViT(arch=SMALL_ARCH).eval()
    plain.load_state_dict(model.state_dict())
    x_even, x_odd = torch.randn(1, 3, 224, 224), torch.randn(1, 3, 97, 61)  # 56x56 .. 7x7 vs padded maps
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x_even), plain(x_even)))
        assert not torch.allclose(model(x_odd)[0], plain(x_odd)[0])


def test_configs_build_with_the_recipe():
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    model = build_classifier('tiny', MMPRETRAIN_MODELS)
    assert type(model.backbone) is DaViT and model.backbone.out_indices == [3]
    assert type(model.head).__name__ == 'NormLinearClsHead'
    cfg = Config.fromfile(CONFIG.format('tiny'))
    assert cfg.optim_wrapper.optimizer.lr == 1e-3 and cfg.optim_wrapper.clip_grad.max_norm == 1.0
    assert cfg.train_dataloader.batch_size * 4 == cfg.auto_scale_lr.base_batch_size
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        assert loader.dataset.pipeline[1].scale == 235 and loader.dataset.pipeline[2].crop_size == 224
    for arch, rate in [('tiny', 0.1), ('small', 0.2), ('base', 0.4)]:
        backbone = Config.fromfile(CONFIG.format(arch)).model.backbone
        assert (backbone.arch, backbone.drop_path_rate) == (arch, rate)


def test_trains_through_tools_train(digits_root, tmp_path):
    config = tiny_cls_config(CONFIG.format('tiny'), str(tmp_path), digits_root, num_images=8, extra=(
        'default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, save_optimizer=False))'))
    work_dir = str(tmp_path / 'work')
    run_tool('tools/train.py', config, '--work-dir', work_dir)
    assert osp.exists(osp.join(work_dir, 'epoch_1.pth'))
