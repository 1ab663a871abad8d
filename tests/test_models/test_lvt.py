"""LVT: sizes and costs, CSA/RASA/blocks against written-out references (every parameter randomised),
every tensor of the official checkpoints against a written-out key map, MixToken, training."""
import glob
import math
import os.path as osp
import runpy
import sys

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.runner import load_checkpoint
from mmpretrain.structures import DataSample
from torch.utils.flop_counter import FlopCounterMode

from vitzoo.models import LVT, convert_state_dict, set_fused_attn
from vitzoo.models.backbones.lvt import (
    ConvSelfAttention,
    RecursiveAtrousAttention,
    TokenBox,
    convert_lvt,
    sample_token_box,
    swap_box,
)
from vitzoo.models.checkpoint import _CONVERTERS, detect_and_convert, strip_prefix
from vitzoo.models.heads.lvt_head import ClassAttention
from vitzoo.registry import MODELS

from helpers import (
    assert_holds_every_tensor,
    fused_eager_gap,
    key_table,
    randomize_,
    run_tool,
    synthetic_state_dict,
    tiny_cls_config,
)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'lvt', 'lvt_8xb128_in1k.py')
MODEL = dict(type='vitzoo.LVTClassifier', backbone=dict(type='vitzoo.LVT', out_indices=(3, )),
             head=dict(type='vitzoo.LVTClsHead', num_classes=1000))


# The official layouts -> vitzoo's classifier, written out from the key lists (tests/data/keys): the
# backbone is ``backbone.<stage>.0`` (patch embedding) and ``backbone.<stage>.1.<block>``.
OFFICIAL_BLOCK = r'backbone\.(\d)\.1\.(\d)\.'
OFFICIAL_TO_VITZOO = [
    (r'backbone\.(\d)\.0\.(proj|norm)\.(weight|bias)', r'backbone.stages.\1.patch_embed.\2.\3'),
    (OFFICIAL_BLOCK + r'(norm1|norm2|attn\.q|attn\.kv|attn\.proj|attn\.sr|attn\.norm|mlp\.fc1|mlp\.fc2)\.(weight|bias)',
     r'backbone.stages.\1.blocks.\2.\3.\4'),
    (OFFICIAL_BLOCK + r'attn\.attn\.(weight|bias)', r'backbone.stages.\1.blocks.\2.attn.attn_gen.\3'),
    (OFFICIAL_BLOCK + r'attn\.weight\.weight', r'backbone.stages.\1.blocks.\2.attn.value.weight'),
    (OFFICIAL_BLOCK + r'attn\.ds\.weight', r'backbone.stages.\1.blocks.\2.attn.atrous_weight'),
    (OFFICIAL_BLOCK + r'mlp\.depconv\.(weight|bias)', r'backbone.stages.\1.blocks.\2.mlp.dwconv.\3'),
    (r'cls_token', 'head.cls_token'),
    (r'post_network\.(\d)\.(norm1|norm2|attn\.q|attn\.kv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)',
     r'head.blocks.\1.\2.\3'),
    (r'norm\.(weight|bias)', r'head.norm.\1'),
    (r'head\.(weight|bias)', r'head.fc.\1'),
    (r'aux_head\.(weight|bias)', r'head.aux_fc.\1'),
]
HEAD_KEYS = r'cls_token|post_network\..*|norm\..*|head\..*|aux_head\..*'


def synthetic(layout: str) -> dict:
    """Distinct random tensors with the official key names and shapes (``lvt_cls`` or ``lvt_seg``)."""
    return synthetic_state_dict(key_table('lvt_official_shapes')[layout])


def macs(model, x) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 2


@pytest.fixture(scope='module')
def backbone():
    return LVT().eval()


@pytest.fixture(scope='module')
def classifier():
    return randomize_(MODELS.build(MODEL)).eval()


def test_params_and_macs(backbone, classifier):
    assert sum(p.numel() for p in backbone.parameters()) == 3_429_092
    assert sum(p.numel() for p in classifier.parameters()) == 5_521_844
    x = torch.randn(1, 3, 224, 224)
    for model, expected in ((backbone, 0.862), (classifier, 0.889)):
        set_fused_attn(model, False)
        assert round(macs(model, x) / 1e9, 3) == expected
        set_fused_attn(model, True)


@pytest.mark.parametrize('size,expected', [
    ((224, 224), [(56, 56), (28, 28), (14, 14), (7, 7)]),
    ((225, 230), [(57, 58), (29, 29), (15, 15), (8, 8)]),
    ((500, 333), [(125, 84), (63, 42), (32, 21), (16, 11)]),
])
def test_output_shapes(backbone, size, expected):
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, *size))
    assert [tuple(o.shape[1:]) for o in outs] == [(c, *hw) for c, hw in zip([64, 64, 160, 256], expected)]
    assert all(o.is_contiguous() for o in outs)
    assert backbone.out_sizes(*size) == expected


def csa_reference(attn: ConvSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """CSA written out per output window and per neighbour on a (B, H, W, C) map."""
    B, H, W, C = x.shape
    heads = attn.num_heads
    hd = C // heads
    transforms = attn.value.weight.reshape(9, C, C)
    out = torch.zeros_like(x)
    for b in range(B):
        for i in range(math.ceil(H / 2)):
            for j in range(math.ceil(W / 2)):
                pooled = x[b, 2 * i:2 * i + 2, 2 * j:2 * j + 2].reshape(-1, C).mean(0)
                weights = (attn.attn_gen(pooled).reshape(heads, 9, 9) * hd**-0.5).softmax(-1)
                cells = [(2 * i - 1 + p // 3, 2 * j - 1 + p % 3) for p in range(9)]
                values = torch.zeros(9, C, dtype=x.dtype)
                for p, (y, z) in enumerate(cells):
                    if 0 <= y < H and 0 <= z < W:
                        values[p] = transforms[p] @ x[b, y, z]
                for q, (y, z) in enumerate(cells):
                    if 0 <= y < H and 0 <= z < W:
                        for h in range(heads):
                            channels = slice(h * hd, (h + 1) * hd)
                            out[b, y, z, channels] += weights[h, q] @ values[:, channels]
    return attn.proj(out)


def rasa_reference(attn: RecursiveAtrousAttention, x: torch.Tensor) -> torch.Tensor:
    """RASA written out with explicit shifts, patches and per-head softmax on a (B, H, W, C) map."""
    B, H, W, C = x.shape
    heads, sr = attn.num_heads, attn.sr_ratio
    hd = C // heads
    kernel = attn.atrous_weight[:, 0]  # (C, 3, 3), shared by every dilation

    def atrous(q):
        total = 0
        for rate in attn.atrous_rates:
            branch = torch.zeros_like(q)
            for di in range(3):
                for dj in range(3):
                    dy, dx = (di - 1) * rate, (dj - 1) * rate
                    for y in range(H):
                        for z in range(W):
                            if 0 <= y + dy < H and 0 <= z + dx < W:
                                branch[:, y, z] += q[:, y + dy, z + dx] * kernel[:, di, dj]
            total = total + F.silu(branch)
        return total

    def attention(x):
        q = atrous(x @ attn.q.weight.T).reshape(B, H * W, heads, hd)
        if sr > 1:
            h, w = H // sr, W // sr
            reduced = torch.zeros(B, h, w, C, dtype=x.dtype)
            for i in range(h):
                for j in range(w):
                    patch = x[:, i * sr:(i + 1) * sr, j * sr:(j + 1) * sr]  # (B, sr, sr, C)
                    reduced[:, i, j] = torch.einsum('byzc,ocyz->bo', patch, attn.sr.weight) + attn.sr.bias
            mean, var = reduced.mean(-1, keepdim=True), reduced.var(-1, unbiased=False, keepdim=True)
            kv_in = (reduced - mean) / torch.sqrt(var + attn.norm.eps) * attn.norm.weight + attn.norm.bias
        else:
            kv_in = x
        kv = kv_in.reshape(B, -1, C) @ attn.kv.weight.T
        k, v = kv[..., :C].reshape(B, -1, heads, hd), kv[..., C:].reshape(B, -1, heads, hd)
        out = torch.cat([
            torch.softmax(q[:, :, h] @ k[:, :, h].transpose(1, 2) * hd**-0.5, dim=-1) @ v[:, :, h]
            for h in range(heads)
        ], dim=-1)
        return attn.proj(out).reshape(B, H, W, C)

    first = F.silu(attention(x))
    return F.silu(attention(first + x))


def test_csa_matches_reference():
    attn = randomize_(ConvSelfAttention(8, 2)).double()
    x = torch.randn(2, 5, 7, 8, dtype=torch.float64)
    with torch.no_grad():
        ours = attn(x.reshape(2, 35, 8), (5, 7)).reshape(2, 5, 7, 8)
        assert (ours - csa_reference(attn, x)).abs().max() < 1e-12


@pytest.mark.parametrize('sr_ratio', [1, 2])
def test_rasa_matches_reference(sr_ratio):
    attn = randomize_(RecursiveAtrousAttention(8, 2, sr_ratio=sr_ratio)).double()
    x = torch.randn(2, 5, 7, 8, dtype=torch.float64)
    with torch.no_grad():
        for fused in (True, False):
            attn.fused_attn = fused
            ours = attn(x.reshape(2, 35, 8), (5, 7)).reshape(2, 5, 7, 8)
            assert (ours - rasa_reference(attn, x)).abs().max() < 1e-12


def test_class_attention_matches_reference():
    attn = randomize_(ClassAttention(8, 2, qkv_bias=True)).double()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    hd = 4
    q, kv = x[:, :1] @ attn.q.weight.T + attn.q.bias, x @ attn.kv.weight.T + attn.kv.bias
    k, v = kv[..., :8], kv[..., 8:]
    heads = [torch.softmax(q[..., h * hd:(h + 1) * hd] @ k[..., h * hd:(h + 1) * hd].transpose(1, 2) * hd**-0.5,
                           dim=-1) @ v[..., h * hd:(h + 1) * hd] for h in range(2)]
    expected = attn.proj(torch.cat(heads, dim=-1))
    with torch.no_grad():
        for fused in (True, False):
            attn.fused_attn = fused
            assert attn(x).shape == (2, 1, 8)
            assert (attn(x) - expected).abs().max() < 1e-12


def layer_norm(norm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


@pytest.mark.parametrize('stage', [0, 1], ids=['csa-linear-mlp', 'rasa-conv-mlp'])
def test_blocks_match_reference(stage):
    """``y = x + attn(norm1(x))``, ``y + mlp(norm2(y))``; the conv MLP is 1x1 fc1, depthwise 3x3, GELU, 1x1 fc2."""
    arch = dict(embed_dims=[8] * 4, depths=[1] * 4, num_heads=[2] * 4, mlp_ratios=[2] * 4, sr_ratios=[2, 2, 2, 1],
                attn_types=['csa', 'rasa', 'rasa', 'rasa'], conv_mlps=[False, True, True, True])
    block = randomize_(LVT(arch=arch)).double().eval().stages[stage].blocks[0]
    x = torch.randn(2, 5, 7, 8, dtype=torch.float64)
    attention = csa_reference if stage == 0 else rasa_reference
    mlp = block.mlp
    with torch.no_grad():
        y = x + attention(block.attn, layer_norm(block.norm1, x))
        h = layer_norm(block.norm2, y)
        if stage == 0:
            h = F.linear(F.gelu(F.linear(h, mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight, mlp.fc2.bias)
        else:
            h = F.conv2d(h.permute(0, 3, 1, 2), mlp.fc1.weight, mlp.fc1.bias)
            h = F.gelu(F.conv2d(h, mlp.dwconv.weight, mlp.dwconv.bias, padding=1, groups=h.shape[1]))
            h = F.conv2d(h, mlp.fc2.weight, mlp.fc2.bias).permute(0, 2, 3, 1)
        ours = block(x.reshape(2, 35, 8), (5, 7)).reshape(2, 5, 7, 8)
    assert (ours - (y + h)).abs().max() < 1e-12


@pytest.mark.kernel_path
def test_fused_and_eager_attention_agree(classifier):
    x = torch.randn(2, 3, 97, 75)
    assert fused_eager_gap(classifier, x) < 1e-5


def test_official_classifier_checkpoint_loads_strictly(classifier, tmp_path):
    """Every tensor of the official ImageNet checkpoint lands where the key map says: through
    ``load_checkpoint``, ``load_state_dict`` and, for its backbone part, a backbone's ``init_cfg``."""
    official = synthetic('lvt_cls')
    assert len(official) == 179
    assert detect_and_convert(official)[0] == 'lvt'
    path = str(tmp_path / 'lvt_imagenet.pth.tar')
    torch.save({'state_dict': official, 'epoch': 300}, path)
    model = MODELS.build(MODEL)
    load_checkpoint(model, path, strict=True)
    assert_holds_every_tensor(model.state_dict(), official, OFFICIAL_TO_VITZOO)
    model = MODELS.build(MODEL)
    model.load_state_dict(official, strict=True)
    assert_holds_every_tensor(model.state_dict(), official, OFFICIAL_TO_VITZOO)
    backbone = LVT(init_cfg=dict(type='Pretrained', checkpoint=path))
    backbone.init_weights()
    assert_holds_every_tensor(backbone.state_dict(), official, OFFICIAL_TO_VITZOO, dropped=HEAD_KEYS,
                              prefix='backbone.')


def test_official_backbone_file_loads_strictly(tmp_path):
    """The official backbone-only file for dense tasks: 148 flat ``backbone.*`` tensors."""
    flat = synthetic('lvt_seg')
    assert len(flat) == 148
    path = str(tmp_path / 'lvt_imagenet_pretrained.pth.tar')
    torch.save(flat, path)
    model = LVT()
    model.load_state_dict(strip_prefix(convert_state_dict(flat), 'backbone.'), strict=True)
    assert_holds_every_tensor(model.state_dict(), flat, OFFICIAL_TO_VITZOO, prefix='backbone.')
    pretrained = LVT(init_cfg=dict(type='Pretrained', checkpoint=path))
    pretrained.init_weights()
    assert_holds_every_tensor(pretrained.state_dict(), flat, OFFICIAL_TO_VITZOO, prefix='backbone.')


def test_conversion_is_idempotent_and_specific(classifier, tmp_path, monkeypatch, capsys):
    ours = classifier.state_dict()
    assert convert_lvt(ours) is None and detect_and_convert(ours)[0] is None
    for layout in ('lvt_cls', 'lvt_seg'):
        keys = key_table('lvt_official_shapes')[layout]
        others = [fn for family, fn in _CONVERTERS.items() if family != 'lvt']
        assert all(fn({k: torch.empty(0) for k in keys}) is None for fn in others)
    for table in ('official_state_dict_keys', 'timm_shapes', 'mmpretrain_classifier_shapes'):
        for name, keys in key_table(table).items():
            if 'lvt' not in name.lower():
                assert convert_lvt({k: torch.empty(0) for k in keys}) is None, name
    src, dst = tmp_path / 'lvt_imagenet.pth.tar', tmp_path / 'out' / 'lvt_vitzoo.pth'
    official = synthetic('lvt_cls')
    torch.save({'state_dict': official}, src)
    monkeypatch.setattr(sys, 'argv', ['lvt2vitzoo.py', str(src), str(dst)])
    runpy.run_path(osp.join(REPO, 'tools', 'model_converters', 'lvt2vitzoo.py'), run_name='__main__')
    assert 'lvt (foreign layout), 179 tensors' in capsys.readouterr().out
    converted = torch.load(dst, map_location='cpu')['state_dict']
    assert_holds_every_tensor(converted, official, OFFICIAL_TO_VITZOO)
    MODELS.build(MODEL).load_state_dict(converted, strict=True)


def test_predict_returns_data_samples(classifier):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        samples = classifier(x, mode='predict')
        feats = classifier.backbone(x)
        cls_feat, tokens, _ = classifier.head._features(feats)
        expected = classifier.head.fc(cls_feat) + 0.5 * classifier.head.aux_fc(tokens).max(dim=1)[0]
    assert isinstance(samples[0], DataSample)
    assert torch.allclose(torch.stack([s.pred_score for s in samples]), expected.softmax(-1))
    assert samples[1].pred_label.item() == expected[1].argmax().item()


def test_gap_head_option():
    model = randomize_(MODELS.build(dict(MODEL, head=dict(type='vitzoo.LVTClsHead', num_classes=10, num_cls_blocks=0,
                                                         with_aux=False)))).eval()
    assert not any(k.startswith(('head.cls_token', 'head.blocks', 'head.aux_fc')) for k in model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feat = model.backbone(x)[-1].flatten(2).transpose(1, 2)
        expected = model.head.fc(model.head.norm(feat).mean(1))
        assert torch.allclose(model(x), expected, atol=1e-6)


def test_token_box_helpers():
    x = torch.arange(2 * 4 * 5).reshape(2, 4, 5, 1).float()
    box = TokenBox(top=1, left=2, bottom=3, right=5)
    mixed = swap_box(x, box)
    assert torch.equal(mixed[0, 1:3, 2:5], x[1, 1:3, 2:5]) and torch.equal(mixed[1, 1:3, 2:5], x[0, 1:3, 2:5])
    mixed[:, 1:3, 2:5] = x[:, 1:3, 2:5]
    assert torch.equal(mixed, x)
    assert torch.equal(swap_box(swap_box(x, box), box), x)
    assert box.area == 6 and box.scale(8) == TokenBox(8, 16, 24, 40)
    for _ in range(20):
        b = sample_token_box((7, 7))
        assert 0 <= b.top <= b.bottom <= 7 and 0 <= b.left <= b.right <= 7


def test_mix_token_swaps_back_in_the_token_predictions(monkeypatch):
    """The box swapped in the stage-1 tokens is swapped back in the token predictions."""
    model = randomize_(MODELS.build(dict(MODEL, head=dict(type='vitzoo.LVTClsHead', num_classes=10),
                                         train_cfg=dict(mix_token=dict(beta=1.0)))))
    loss_module = model.head.loss_module
    x = torch.randn(3, 3, 64, 64)
    samples = [DataSample().set_gt_label(i) for i in (1, 4, 7)]
    targets = F.one_hot(torch.tensor([1, 4, 7]), 10).float()
    backbone, head = model.backbone, model.head

    def run(box):
        monkeypatch.setattr('vitzoo.models.classifiers.lvt.sample_token_box', lambda grid, beta: box)
        with torch.no_grad():
            return model.loss(x, samples)

    # A box over the whole 2x2 grid: the network sees the flipped batch, the swap-back and the
    # class-target mixing undo the flip, so the losses equal those of the unmixed batch.
    with torch.no_grad():
        plain = head.loss(backbone(x), samples)
        assert torch.equal(backbone(x, mix_box=TokenBox(0, 0, 2, 2))[0], backbone(x.flip(0))[0])
        assert torch.equal(backbone(x, mix_box=TokenBox(1, 1, 1, 2))[0], backbone(x)[0])
    full = run(TokenBox(0, 0, 2, 2))
    assert all(torch.allclose(full[k], plain[k], atol=1e-6) for k in ('loss_cls', 'loss_dense'))

    # A partial box, written out: swap 16x16 stage-1 tokens, run the rest, swap the predictions back.
    box = TokenBox(top=0, left=1, bottom=1, right=2)
    with torch.no_grad():
        tokens, size = backbone.stages[0].patch_embed(x)
        grid = tokens.reshape(3, *size, -1).clone()
        grid[:, 0:8, 8:16] = grid.flip(0)[:, 0:8, 8:16]
        feat = grid.flatten(1, 2)
        for block in backbone.stages[0].blocks:
            feat = block(feat, size)
        feat = feat.transpose(1, 2).reshape(3, -1, *size)
        for stage in backbone.stages[1:]:
            feat, size = stage(feat)
            feat = feat.transpose(1, 2).reshape(3, -1, *size)
        cls_feat, token_feats, _ = head._features((feat, ))
        aux = head.aux_fc(token_feats).reshape(3, 2, 2, 10)
        aux[:, 0, 1] = aux.flip(0)[:, 0, 1].clone()
        cls_targets = 0.75 * targets + 0.25 * targets.flip(0)
        expected_cls = loss_module(head.fc(cls_feat), cls_targets, avg_factor=3)
        expected_dense = loss_module(aux.reshape(-1, 10), targets.repeat_interleave(4, 0), avg_factor=12)
    partial = run(box)
    assert torch.allclose(partial['loss_cls'], expected_cls, atol=1e-6)
    assert torch.allclose(partial['loss_dense'], 0.5 * expected_dense, atol=1e-6)


def test_dense_teacher_labels():
    model = randomize_(MODELS.build(dict(MODEL, head=dict(type='vitzoo.LVTClsHead', num_classes=10)))).train()
    x = torch.randn(2, 3, 64, 64)
    maps = torch.rand(2, 10, 4, 4).softmax(1)
    samples = [DataSample().set_gt_label(i) for i in (2, 3)]
    for sample, dense_map in zip(samples, maps):
        sample.set_field(dense_map, 'gt_dense_score')
    with torch.no_grad():
        losses = model.loss(x, samples)
        _, tokens, _ = model.head._features(model.backbone(x))
        aux = model.head.aux_fc(tokens).reshape(-1, 10)
        dense = F.avg_pool2d(maps, 2).permute(0, 2, 3, 1).reshape(-1, 10)
        expected = model.head.loss_module(aux, dense, avg_factor=8)
    assert torch.allclose(losses['loss_dense'], 0.5 * expected, atol=1e-6)


def test_config_recipe():
    cfg = Config.fromfile(CONFIG)
    assert cfg.model.train_cfg.mix_token == dict(beta=1.0)
    head = cfg.model.head
    assert (head.cls_weight, head.dense_weight, cfg.model.backbone.drop_path_rate) == (1.0, 0.5, 0.1)
    assert cfg.optim_wrapper.optimizer.lr == 1.6e-3 and cfg.optim_wrapper.optimizer.weight_decay == 0.05
    assert cfg.train_cfg.max_epochs == 310 and cfg.train_dataloader.batch_size == 128
    assert cfg.param_scheduler[0].end == 20 and cfg.param_scheduler[1].eta_min == 1e-5
    assert cfg.test_pipeline[1].scale == 233
    model = MODELS.build(cfg.model)
    assert model.data_preprocessor.batch_augments is None
    assert sum(p.numel() for p in model.parameters()) == 5_521_844


def test_trains_through_tools_train(digits_root, tmp_path):
    config = tiny_cls_config(CONFIG, str(tmp_path), digits_root, img_size=64, num_images=8)
    work_dir = str(tmp_path / 'work')
    run_tool('tools/train.py', config, '--work-dir', work_dir)
    assert osp.exists(osp.join(work_dir, 'epoch_1.pth'))
    logs = ''.join(open(p).read() for p in glob.glob(osp.join(work_dir, '*', '*.log')))
    assert 'loss_cls' in logs and 'loss_dense' in logs
