"""PiT: parameter counts, parity with timm (every parameter randomised, every output compared), every
tensor of the official and timm layouts against written-out key maps, input sizes, dense outputs,
the OpenMMLab backbone contract and DeiT-style distillation."""
import math
import os.path as osp
import re

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmpretrain.structures import DataSample

from vitzoo.models import PiT
from vitzoo.models.backbones.pit import convert_pit, resize_pos_embed
from vitzoo.models.checkpoint import convert_state_dict, converter_cli, strip_prefix
from vitzoo.registry import MODELS

from helpers import (
    MISWIRINGS,
    REPO,
    assert_holds_every_tensor,
    assert_parity,
    assert_parity_catches_miswiring,
    build_uninitialised,
    fused_eager_gap,
    key_table,
    randomize_,
    run_tool,
    synthetic_state_dict,
    tiny_cls_config,
)

timm = pytest.importorskip('timm')

# timm name -> (arch, distilled, exact parameter count of the official model incl. head)
VARIANTS = {
    'pit_ti_224': ('ti', False, 4_847_272),
    'pit_xs_224': ('xs', False, 10_618_888),
    'pit_s_224': ('s', False, 23_461_912),
    'pit_b_224': ('b', False, 73_764_840),
    'pit_ti_distilled_224': ('ti', True, 5_104_336),
    'pit_xs_distilled_224': ('xs', True, 11_003_984),
    'pit_s_distilled_224': ('s', True, 24_039_056),
    'pit_b_distilled_224': ('b', True, 74_790_096),
}
TINY_ARCH = dict(base_dims=[8, 8, 8], depths=[1, 1, 1], num_heads=[1, 2, 4], patch_size=16, stride=8)

# The official and timm classifier layouts -> vitzoo's, written out from the key lists (tests/data/keys).
BLOCK = r'transformers\.(\d)\.blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)'
COMMON_TO_VITZOO = [
    (r'pos_embed', 'backbone.pos_embed'),
    (r'cls_token', 'backbone.cls_token'),
    (r'patch_embed\.conv\.(weight|bias)', r'backbone.patch_embed.proj.\1'),
    (BLOCK, r'backbone.stages.\1.blocks.\2.\3.\4'),
    (r'norm\.(weight|bias)', r'backbone.norm.\1'),
    (r'head\.(weight|bias)', r'head.fc.\1'),
    (r'head_dist\.(weight|bias)', r'head.fc_dist.\1'),
]
# The official model keeps the pooling layer that opens stage n + 1 in ``pools.n``, timm in the stage.
OFFICIAL_TO_VITZOO = COMMON_TO_VITZOO + [
    (r'pools\.(\d)\.(conv|fc)\.(weight|bias)', lambda m: f'backbone.stages.{int(m[1]) + 1}.pool.{m[2]}.{m[3]}'),
]
TIMM_TO_VITZOO = COMMON_TO_VITZOO + [
    (r'transformers\.(\d)\.pool\.(conv|fc)\.(weight|bias)', r'backbone.stages.\1.pool.\2.\3'),
]


def classifier_cfg(arch, distilled: bool, num_classes: int = 1000) -> dict:
    width = PiT(arch=arch).embed_dims[-1] if isinstance(arch, dict) else {
        'ti': 256, 'xs': 384, 's': 576, 'b': 1024}[arch]
    head = (dict(type='vitzoo.DistilledLinearClsHead', num_classes=num_classes, in_channels=width)
            if distilled else dict(type='mmpretrain.LinearClsHead', num_classes=num_classes, in_channels=width))
    return dict(type='vitzoo.ImageClassifier',
                backbone=dict(type='vitzoo.PiT', arch=arch, distilled=distilled, out_type='cls_token'),
                head=head)


class Zoo:
    """Each timm PiT (every parameter randomised) with the vitzoo classifier holding its weights."""

    def __init__(self):
        self.cache = {}

    def __call__(self, name: str):
        if name not in self.cache:
            arch, distilled, _ = VARIANTS[name]
            ref = randomize_(timm.create_model(name, pretrained=False)).eval()
            model = build_uninitialised(lambda: MODELS.build(classifier_cfg(arch, distilled))).eval()
            model.load_state_dict(ref.state_dict(), strict=True)  # converted as it loads
            self.cache[name] = ref, model
        return self.cache[name]


@pytest.fixture(scope='module')
def zoo():
    return Zoo()


def official_state_dict(name: str) -> dict:
    """Distinct random tensors under the official key names, shapes from timm's dump."""
    keys = key_table('official_state_dict_keys')['pit_official.' + name.replace('_224', '')]
    shapes = key_table('timm_shapes')[name]
    return synthetic_state_dict({k: shapes[official_to_timm(k)] for k in keys})


def official_to_timm(key: str) -> str:
    """timm keeps the pooling layers of the official ``pools.n`` in the following stage."""
    return re.sub(r'^pools\.(\d)\.', lambda m: f'transformers.{int(m.group(1)) + 1}.pool.', key)


@pytest.mark.parametrize('name', list(VARIANTS))
def test_param_count(zoo, name):
    model = zoo(name)[1]
    assert sum(p.numel() for p in model.parameters()) == VARIANTS[name][2]


@pytest.mark.kernel_path
@pytest.mark.parametrize('name', list(VARIANTS))
def test_timm_parity(zoo, name):
    """Logits (class and distillation heads separately, and their average) and every stage map."""
    ref, model = zoo(name)
    distilled = VARIANTS[name][1]

    def ours(model, x):
        feats, maps = model.backbone(x), model.backbone.forward_stages(x)[0]
        return [model.head(feats), *maps, *(model.head.forward_logits(feats) if distilled else [])]

    def theirs(ref, x):
        final, maps = ref.forward_intermediates(x)
        return [ref.forward_head(final), *maps,
                *([ref.head(final[:, 0]), ref.head_dist(final[:, 1])] if distilled else [])]

    assert_parity(model, ours, ref, theirs, torch.randn(2, 3, 224, 224))


@pytest.mark.kernel_path
@pytest.mark.parametrize('miswiring', MISWIRINGS)
def test_parity_bound_catches_a_miswired_converter(zoo, miswiring):
    ref, model = zoo('pit_ti_distilled_224')
    assert_parity_catches_miswiring(model, lambda m, x: m.backbone.forward_stages(x)[0] + [m(x, mode='tensor')],
                                    ref, lambda r, x: r.forward_intermediates(x)[1] + [r(x)], miswiring,
                                    torch.randn(1, 3, 224, 224))


@pytest.mark.parametrize('name', list(VARIANTS))
def test_timm_layout_every_tensor(zoo, name):
    ref, model = zoo(name)
    assert_holds_every_tensor(model.state_dict(), ref.state_dict(), TIMM_TO_VITZOO)


@pytest.mark.parametrize('name', list(VARIANTS))
def test_official_layout_every_tensor(zoo, name):
    official = official_state_dict(name)
    ref, model = zoo(name)
    model.load_state_dict(official, strict=True)
    try:
        assert_holds_every_tensor(model.state_dict(), official, OFFICIAL_TO_VITZOO)
    finally:
        model.load_state_dict(ref.state_dict(), strict=True)  # back to the weights the other tests compare


def test_conversion_is_idempotent_and_specific(zoo, tmp_path):
    model = zoo('pit_ti_224')[1]
    own = model.state_dict()
    assert convert_pit(own) is None and convert_state_dict(own).keys() == own.keys()
    for layout, names in key_table('official_state_dict_keys').items():
        if not layout.startswith('pit_official.'):
            assert convert_pit({k: torch.zeros(1) for k in names}) is None, layout
    # a classification checkpoint fits a dense backbone, which has no token norm
    featmap = PiT(arch='ti', out_type='featmap')
    missing, unexpected = featmap.load_state_dict(strip_prefix(own, 'backbone.'), strict=False)
    assert not missing and sorted(unexpected) == ['norm.bias', 'norm.weight']
    # tools/model_converters/pit2vitzoo.py
    src, dst = str(tmp_path / 'pit_ti.pth'), str(tmp_path / 'pit_ti_vitzoo.pth')
    official = official_state_dict('pit_ti_224')
    torch.save(official, src)
    converter_cli('pit', [src, dst])
    converted = torch.load(dst)['state_dict']
    assert convert_pit(converted) is None
    assert_holds_every_tensor(converted, official, OFFICIAL_TO_VITZOO)


def test_pos_embed_interpolation(zoo):
    model = zoo('pit_s_224')[1]
    pos_224 = model.backbone.pos_embed.detach().clone()
    assert pos_224.shape[-2:] == (27, 27)
    x = torch.randn(1, 3, 256, 256)
    explicit = F.interpolate(pos_224, size=(31, 31), mode='bicubic', align_corners=False)
    at_256 = MODELS.build(dict(classifier_cfg('s', False), backbone=dict(
        type='vitzoo.PiT', arch='s', out_type='cls_token', img_size=256))).eval()
    state = model.state_dict()
    at_256.load_state_dict(dict(state, **{'backbone.pos_embed': explicit}), strict=True)
    with torch.no_grad():
        assert torch.equal(model(x), at_256(x))
    # a 224 checkpoint loaded into a model defined at 256 is interpolated the same way
    at_256.load_state_dict(state, strict=True)
    assert torch.equal(at_256.backbone.pos_embed, explicit)
    assert torch.equal(resize_pos_embed(pos_224, (27, 27)), pos_224)


def grid(size: int, patch: int, stride: int) -> list:
    first = (size - patch) // stride + 1
    return [first, (first - 1) // 2 + 1, ((first - 1) // 2) // 2 + 1]


@pytest.fixture(scope='module')
def dense_models():
    models = {}
    for arch in ('s', 'b'):
        featmap = PiT(arch=arch, out_type='featmap').eval()
        pyramid = PiT(arch=arch, out_type='pyramid').eval()
        pyramid.load_state_dict(featmap.state_dict(), strict=False)
        models[arch] = featmap, pyramid
    return models


@pytest.mark.parametrize('arch,patch,stride,dims', [('s', 16, 8, (144, 288, 576)), ('b', 14, 7, (256, 512, 1024))])
@pytest.mark.parametrize('size', [(224, 224), (256, 256), (256, 320), (225, 250)])
def test_output_shapes(dense_models, arch, patch, stride, dims, size):
    H, W = size
    featmap, pyramid = dense_models[arch]
    x = torch.randn(1, 3, H, W)
    with torch.no_grad():
        maps = featmap(x)
        levels = pyramid.pyramid(list(maps), (H, W))
        if size == (225, 250):
            outs = pyramid(x)
            assert all(o.is_contiguous() and torch.equal(o, level) for o, level in zip(outs, levels, strict=True))
    expected = [(1, c, h, w) for c, h, w in zip(dims, grid(H, patch, stride), grid(W, patch, stride))]
    assert [tuple(m.shape) for m in maps] == expected
    if size == (224, 224):
        assert expected[0][2:] == ((27, 27) if arch == 's' else (31, 31))
    channels = (dims[0], ) + dims
    assert [tuple(m.shape) for m in levels] == [(1, c, math.ceil(H / s), math.ceil(W / s))
                                              for c, s in zip(channels, (4, 8, 16, 32))]
    assert pyramid.out_channels == channels and pyramid.out_strides == (4, 8, 16, 32)
    assert all(m.is_contiguous() for m in maps)
    for level, stage_map in zip(levels[1:], maps):
        if level.shape == stage_map.shape:  # same grid: the stage map passes through unchanged
            assert torch.equal(level, stage_map)


def test_pyramid_feeds_segformer_and_panoptic_fpn():
    """The four levels fit mmseg's SegformerHead and mmdet's FPN + PanopticFPNHead, also with
    PiT-B's strides (patch 14, stride 7)."""
    mmseg_heads = pytest.importorskip('mmseg.models.decode_heads')
    mmdet_necks = pytest.importorskip('mmdet.models.necks')
    mmdet_seg_heads = pytest.importorskip('mmdet.models.seg_heads')
    backbone = PiT(arch=dict(TINY_ARCH, patch_size=14, stride=7), out_type='pyramid').eval()
    x = torch.randn(1, 3, 256, 320)
    from mmengine.registry import DefaultScope
    with torch.no_grad():
        feats = backbone(x)
        with DefaultScope.overwrite_default_scope('mmseg'):
            seg = mmseg_heads.SegformerHead(in_channels=list(backbone.out_channels), in_index=[0, 1, 2, 3],
                                            channels=16, num_classes=5)(list(feats))
        with DefaultScope.overwrite_default_scope('mmdet'):
            fpn = mmdet_necks.FPN(in_channels=list(backbone.out_channels), out_channels=16, num_outs=5)(feats)
            panoptic = mmdet_seg_heads.PanopticFPNHead(num_things_classes=3, num_stuff_classes=2, in_channels=16,
                                                       inner_channels=32, start_level=0, end_level=4)(fpn)
    assert seg.shape == (1, 5, 64, 80)
    assert panoptic['seg_preds'].shape == (1, 3, 64, 80)


def test_class_token_outputs_and_names():
    """What only PiT has: the class (and distillation) token output and its arch names."""
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        tokens = PiT(arch=TINY_ARCH, out_type='cls_token', distilled=True)(x)
        assert len(tokens) == 1 and [t.shape for t in tokens[0]] == [(1, 32), (1, 32)]
        assert [t.shape for t in PiT(arch=TINY_ARCH, out_type='cls_token')(x)] == [(1, 32)]
    assert PiT(arch='tiny').embed_dims == PiT(arch='ti').embed_dims == [64, 128, 256]
    with pytest.raises(ValueError, match='last stage'):
        PiT(arch=TINY_ARCH, out_type='cls_token', out_indices=(0, 2))


@pytest.mark.kernel_path
def test_fused_and_eager_attention_agree(zoo):
    model = zoo('pit_xs_224')[1]
    x = torch.randn(1, 3, 224, 224)
    assert fused_eager_gap(model, x, lambda x: model.backbone.forward_stages(x)[0] + [model(x)]) <= 1e-5


def test_frozen_stages_of_the_stem_token_norm_and_pyramid():
    """PiT's own frozen parts: the stem holds the position embedding and tokens, ``frozen_stages=3``
    also freezes the token norm, and the pyramid's transposed conv is never frozen."""
    model = PiT(arch=TINY_ARCH, out_type='cls_token', frozen_stages=2)
    assert not model.pos_embed.requires_grad and not model.cls_token.requires_grad
    assert model.norm.weight.requires_grad
    model = PiT(arch=TINY_ARCH, out_type='cls_token', frozen_stages=3)
    assert not any(p.requires_grad for p in model.parameters())
    model = PiT(arch=TINY_ARCH, out_type='pyramid', frozen_stages=3)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ['pyramid.upsample.weight',
                                                                           'pyramid.upsample.bias']
    model = PiT(arch=TINY_ARCH, frozen_stages=0)
    assert not model.pos_embed.requires_grad and model.stages[0].blocks[0].norm1.weight.requires_grad


def test_init_cfg_pretrained_official_checkpoint(tmp_path):
    """Every tensor of the official file reaches the backbone; a dense model at 256 gets the position
    embedding resized and has no token norm."""
    official = official_state_dict('pit_ti_224')
    path = str(tmp_path / 'pit_ti_730.pth')
    torch.save(official, path)
    model = PiT(arch='ti', out_type='cls_token', init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    assert_holds_every_tensor(model.state_dict(), official, OFFICIAL_TO_VITZOO, dropped=r'head\..*',
                              prefix='backbone.')
    model = PiT(arch='ti', out_type='pyramid', img_size=256,
                init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith('pyramid.') and k != 'pos_embed'}
    assert_holds_every_tensor(state, official, OFFICIAL_TO_VITZOO, dropped=r'head\..*|norm\..*|pos_embed',
                              prefix='backbone.')
    assert torch.equal(model.pos_embed, resize_pos_embed(official['pos_embed'], (31, 31)))


def tiny_teacher(num_classes: int = 10) -> dict:
    return classifier_cfg(TINY_ARCH, False, num_classes)


def batch(num: int = 2, size: int = 64, num_classes: int = 10) -> dict:
    return dict(inputs=[torch.randint(0, 256, (3, size, size), dtype=torch.uint8) for _ in range(num)],
                data_samples=[DataSample().set_gt_label(i % num_classes) for i in range(num)])


def test_distillation_classifier_trains():
    student = classifier_cfg(TINY_ARCH, True, 10)
    model = MODELS.build(dict(student, type='vitzoo.DistillationClassifier', teacher=tiny_teacher(),
                              data_preprocessor=dict(num_classes=10)))
    model.init_weights()
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    student_before = model.backbone.stages[2].blocks[0].mlp.fc1.weight.clone()
    assert not any(k.startswith('teacher.') for k in model.state_dict())
    teacher_params = {id(p) for p in model.teacher.parameters()}
    assert not teacher_params & {id(p) for p in model.parameters()}
    assert 'teacher=ImageClassifier' in repr(model)
    optim = OptimWrapper(torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2))
    model.train()
    assert not model.teacher.training
    log = model.train_step(batch(), optim)
    assert set(log) == {'loss', 'loss_cls', 'loss_distill'}
    assert torch.isclose(log['loss'], log['loss_cls'] + log['loss_distill'])
    assert all(torch.equal(v, model.teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert not torch.equal(student_before, model.backbone.stages[2].blocks[0].mlp.fc1.weight)
    # the hard distillation term: 0.5 * CE(distillation logits, teacher argmax)
    data = model.data_preprocessor(batch(), False)
    with torch.no_grad():
        losses = model.loss(data['inputs'], data['data_samples'])
        dist_logits = model.head.forward_logits(model.extract_feat(data['inputs']))[1]
        target = model.teacher(data['inputs']).argmax(1)
    assert torch.isclose(losses['loss_distill'], 0.5 * F.cross_entropy(dist_logits, target))
    # student checkpoints load into a plain classifier and back
    plain = MODELS.build(student)
    plain.load_state_dict(model.state_dict(), strict=True)
    model.load_state_dict(plain.state_dict(), strict=True)
    # the teacher follows the classifier's dtype/device moves
    model.double()
    assert next(model.teacher.parameters()).dtype == torch.float64


def test_distilled_head_losses():
    from vitzoo.models.heads.pit_head import DistilledLinearClsHead
    feats = ((torch.randn(4, 8), torch.randn(4, 8)), )
    samples = [DataSample().set_gt_label(i) for i in range(4)]
    teacher = torch.randn(4, 5)
    soft = DistilledLinearClsHead(5, 8, distill_type='soft', distill_tau=2.0, distill_alpha=0.3)
    logits_dist = soft.forward_logits(feats)[1]
    kl = F.kl_div(F.log_softmax(logits_dist / 2, 1), F.softmax(teacher / 2, 1), reduction='batchmean') * 4 / 5
    assert torch.isclose(soft.loss(feats, samples, teacher_logits=teacher)['loss_distill'], 0.3 * kl, atol=1e-6)
    none = DistilledLinearClsHead(5, 8, distill_type='none')
    assert set(none.loss(feats, samples)) == {'loss'}
    with pytest.raises(RuntimeError, match='needs a teacher'):
        DistilledLinearClsHead(5, 8).loss(feats, samples)
    logits, logits_dist = none.forward_logits(feats)
    assert torch.equal(none(feats), (logits + logits_dist) / 2)


def test_timm_teacher_checkpoint(tmp_path):
    teacher = timm.create_model('test_resnet', num_classes=10).eval()
    path = str(tmp_path / 'teacher.pth')
    torch.save({'model': teacher.state_dict()}, path)  # DeiT's teacher file layout
    model = MODELS.build(dict(classifier_cfg(TINY_ARCH, True, 10), type='vitzoo.DistillationClassifier',
                              teacher=dict(type='mmpretrain.TimmClassifier', model_name='test_resnet',
                                           num_classes=10),
                              teacher_checkpoint=path))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.teacher(x), teacher(x))


def test_configs():
    widths = {'ti': 256, 'xs': 384, 's': 576, 'b': 1024}
    for arch, width in widths.items():
        for distilled in (False, True):
            name = f'pit-{arch}{"-distilled" if distilled else ""}_8xb128_in1k.py'
            cfg = Config.fromfile(osp.join(REPO, 'configs', 'pit', name))
            model = cfg.model
            assert model.backbone.arch == arch and model.backbone.get('distilled', False) == distilled
            assert model.head.in_channels == width and model.backbone.drop_path_rate == 0.1
            assert cfg.optim_wrapper.optimizer.lr == 5e-4 * 8 * 128 / 512
            assert cfg.test_dataloader.dataset.pipeline[1].scale == 248
            if distilled:
                assert model.type == 'vitzoo.DistillationClassifier'
                assert model.head.distill_type == 'hard' and model.teacher.model_name == 'regnety_160'
    model = MODELS.build(Config.fromfile(osp.join(REPO, 'configs/pit/pit-ti_8xb128_in1k.py')).model)
    assert sum(p.numel() for p in model.parameters()) == VARIANTS['pit_ti_224'][2]


def test_train_distilled_config(tmp_path, digits_root):
    """tools/train.py trains the distilled recipe a few iterations with a tiny teacher."""
    teacher = tiny_teacher()
    extra = (f'model = dict(head=dict(num_classes=10), teacher=dict(_delete_=True, **{teacher!r}), '
             'teacher_checkpoint=None)')
    config = tiny_cls_config('configs/pit/pit-ti-distilled_8xb128_in1k.py', str(tmp_path), digits_root,
                             img_size=32, num_images=8, extra=extra)
    run_tool('tools/train.py', config, '--work-dir', str(tmp_path / 'work'))
    logs = open(next((tmp_path / 'work').rglob('*.log'))).read()
    assert 'loss_distill' in logs and 'loss_cls' in logs
    assert (tmp_path / 'work' / 'epoch_1.pth').exists()
