"""tools/misc/swap_backbone.py (vitzoo.apis.swap): a vitzoo backbone swapped into configs of every toolbox.

One backbone family per source config: vitzoo's SegFormer (SVT) and Panoptic FPN (PiT, pyramid),
mmdet's Mask R-CNN (PCPVT) and RetinaNet (LVT), mmseg's UPerNet (DaViT) and mmpretrain's ResNet-50
(PiT, class token). Most swaps use the contract table's tiny arch of the family with a synthetic
classifier checkpoint in vitzoo's layout (every tensor random), which the written ``init_cfg``
must load strictly; one per task trains two iterations through tools/train.py on generated data
(the digits, the toy scenes in the ADE20K and COCO layouts). Nothing is downloaded.
"""
import os.path as osp
import re
import sys

import pytest
import torch
from mmengine.config import Config

from vitzoo.apis import swap
from vitzoo.apis.model import ModelHub, build_model_from_cfg
from vitzoo.apis.random_batch import random_batch
from vitzoo.apis.swap import SwapError, swap_backbone
from vitzoo.models import LVT, PCPVT, SVT, DaViT, PiT

from backbone_table import ROWS, row_of
from helpers import REPO, randomize_, run_tool_in_process, tiny_cls_config, toy_ade_data

sys.path.insert(0, osp.join(REPO, 'tools', 'dataset_converters'))
from toy_dense_dataset import ADE20K_CLASSES, COCO_THING_CLASSES, generate  # noqa: E402

MASK_RCNN = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
RETINANET = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
UPERNET = 'mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py'
RESNET50 = 'mmpretrain::resnet/resnet50_8xb32_in1k.py'
YOLOF = 'mmdet::yolof/yolof_r50-c5_8xb8-1x_coco.py'
SEGFORMER = 'vitzoo::segformer/segformer_twins-pcpvt-s_8xb2-160k_ade20k-512x512.py'
PANOPTIC_FPN = 'vitzoo::panoptic_fpn/panoptic-fpn_lvt_fpn_1x_coco.py'


def tiny(backbone: type, **kwargs) -> dict:
    """The contract table's tiny arch of a family."""
    return row_of(backbone, **kwargs).arch


def tiny_channels(backbone: type, **kwargs) -> list:
    row = row_of(backbone, **kwargs)
    return list(row.channels)


@pytest.fixture(scope='module')
def toy_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('toy_dense'))
    generate(root, num_train=8, num_val=4)
    return root


def classifier_checkpoint(path, model_name: str, arch: dict) -> dict:
    """A classifier of the index with ``arch`` and every tensor random, saved in vitzoo's layout;
    returns its backbone tensors."""
    cfg = Config.fromfile(ModelHub.get(model_name).config)
    cfg.model.backbone.arch = arch
    model = randomize_(build_model_from_cfg(cfg))
    torch.save(dict(state_dict=model.state_dict()), str(path))
    return {k[len('backbone.'):]: v for k, v in model.state_dict().items() if k.startswith('backbone.')}


def build_written(path: str, with_weights: bool = False):
    """The model of a written config (its checkpoint loaded when ``with_weights``), in eval mode."""
    cfg = Config.fromfile(path)
    if not with_weights:
        cfg.model.backbone.init_cfg = None
    model = build_model_from_cfg(cfg)
    if with_weights:
        model.init_weights()
    return cfg, model.eval()


def forward(model, scope: str, size: int = 32) -> list:
    """Backbone maps of a random batch, after a prediction of the whole model on it."""
    inputs, samples = random_batch(model, scope, 2, size, size)
    with torch.no_grad():
        predictions = model(inputs, samples, mode='predict')
        maps = model.backbone(inputs)
    assert len(predictions) == 2
    return list(maps)


def assert_loads_strictly(model, checkpoint_backbone: dict) -> None:
    """Every tensor the new backbone shares with the checkpoint is the checkpoint's; the others are those
    it declares classifiers never hold, and what the checkpoint holds beyond them those it declares it lacks."""
    backbone = model.backbone
    own = backbone.state_dict()
    shared = set(own) & set(checkpoint_backbone)
    assert len(shared) > len(own) // 2 and all(torch.equal(own[k], checkpoint_backbone[k]) for k in shared)
    for keys, patterns in ((set(own) - shared, backbone.pretrained_missing_ok),
                           (set(checkpoint_backbone) - shared, backbone.pretrained_unexpected_ok)):
        assert all(any(re.match(p, k) for p in patterns) for k in keys), sorted(keys)[:5]


# ------------------------------------------------------------------------------- dense configs


def test_segformer_config_with_svt(tmp_path):
    arch = tiny(SVT)
    ckpt = classifier_checkpoint(tmp_path / 'svt.pth', 'twins-svt-small_3rdparty_8xb128_in1k', arch)
    out = tmp_path / 'segformer_svt.py'
    result = swap_backbone(SEGFORMER, 'twins-svt-small_3rdparty_8xb128_in1k', out,
                           checkpoint=str(tmp_path / 'svt.pth'), backbone_args=dict(arch=arch))
    text = out.read_text()
    # vitzoo's configs are inherited by path: a vitzoo:: base would put the model in vitzoo's scope
    base = osp.relpath(osp.join(REPO, 'configs', SEGFORMER.split('::')[1]), str(tmp_path))
    assert text == result.text and f"_base_ = {base!r}" in text
    assert result.changes == ['model.decode_head.in_channels: [64, 128, 320, 512] -> [16, 32, 48, 64]']
    cfg, model = build_written(str(out), with_weights=True)
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained', checkpoint=str(tmp_path / 'svt.pth'),
                                               prefix='backbone.')
    assert_loads_strictly(model, ckpt)
    maps = forward(model, 'mmseg')
    assert [m.shape[1] for m in maps] == list(model.decode_head.in_channels) == tiny_channels(SVT)


def test_panoptic_fpn_config_with_pit_pyramid(tmp_path):
    arch = tiny(PiT, out_type='pyramid')
    ckpt = classifier_checkpoint(tmp_path / 'pit.pth', 'pit-ti_3rdparty_8xb128_in1k', arch)
    out = tmp_path / 'panoptic_pit.py'
    swap_backbone(PANOPTIC_FPN, 'pit-ti_3rdparty_8xb128_in1k', out, checkpoint=str(tmp_path / 'pit.pth'),
                  backbone_args=dict(arch=arch))
    cfg, model = build_written(str(out), with_weights=True)
    backbone = cfg.model.backbone
    assert (backbone.out_type, backbone.out_indices) == ('pyramid', (0, 1, 2, 3))
    assert_loads_strictly(model, ckpt)
    maps = forward(model, 'mmdet')
    assert [m.shape[1] for m in maps] == list(model.neck.in_channels) == tiny_channels(PiT, out_type='pyramid')
    assert [m.shape[-1] for m in maps] == [8, 4, 2, 1]  # strides 4-32 of a 32-pixel input


def test_mask_rcnn_config_with_pcpvt(tmp_path):
    arch = tiny(PCPVT)
    ckpt = classifier_checkpoint(tmp_path / 'pcpvt.pth', 'twins-pcpvt-small_3rdparty_8xb128_in1k', arch)
    out = tmp_path / 'mask_rcnn_pcpvt.py'
    result = swap_backbone(MASK_RCNN, 'vitzoo.PCPVT:small', out, checkpoint=str(tmp_path / 'pcpvt.pth'),
                           backbone_args=dict(arch=arch))
    assert result.changes == ['model.neck.in_channels: [256, 512, 1024, 2048] -> [16, 32, 48, 64]']
    text = out.read_text()
    # the source ResNet's frozen stem and BN settings are named, not carried
    assert 'Not carried from the source backbone: frozen_stages=1, norm_eval=True' in text
    cfg, model = build_written(str(out), with_weights=True)
    assert 'frozen_stages' not in cfg.model.backbone and cfg.custom_imports.imports == ['vitzoo.models']
    assert cfg.model.backbone.drop_path_rate == 0.3  # the PCPVT classifiers' (mmpretrain's Twins recipe)
    assert_loads_strictly(model, ckpt)
    maps = forward(model, 'mmdet')
    assert [m.shape[1] for m in maps] == list(model.neck.in_channels) == tiny_channels(PCPVT)


def test_index_weights_are_written_and_fit_without_a_download(tmp_path, monkeypatch):
    """Without --checkpoint the index's URL is written with prefix 'backbone.'; the check matches the
    classifier's backbone tensors against the new backbone (shapes, nothing downloaded)."""
    # torch's trunc_normal_ is slow; the values of this full-size DaViT-T do not matter here
    monkeypatch.setattr(torch.nn.init, 'trunc_normal_', lambda t, *args, **kwargs: t)
    out = tmp_path / 'seg_davit.py'
    info = ModelHub.get('davit-tiny_3rdparty_in1k')
    swap_backbone('vitzoo::segformer/segformer_lvt_1xb8-1k_toy-64x64.py', info.name, out)
    cfg = Config.fromfile(str(out))
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained', checkpoint=info.weights, prefix='backbone.')
    assert cfg.model.decode_head.in_channels == [96, 192, 384, 768]
    # a backbone the weights do not fit is refused before anything is written
    with pytest.raises(SwapError, match='weights of davit-tiny_3rdparty_in1k would not load strictly'):
        swap_backbone('vitzoo::segformer/segformer_lvt_1xb8-1k_toy-64x64.py', info.name, tmp_path / 'x.py',
                      backbone_args=dict(arch=tiny(DaViT)))
    assert not (tmp_path / 'x.py').exists()


# ------------------------------------------------------------------- one training run per task


def test_resnet50_classifier_with_pit_trains(tmp_path, monkeypatch, digits_root, capsys):
    """mmpretrain's ResNet-50 ImageNet config with PiT-Ti through the command line: the class token
    replaces the pooling neck; two iterations on the digits."""
    pit = PiT(arch='ti', out_type='cls_token')
    ckpt = tmp_path / 'pit_ti.pth'
    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in randomize_(pit).state_dict().items()}), ckpt)
    out = tmp_path / 'resnet50_pit.py'
    run_tool_in_process(monkeypatch, 'misc/swap_backbone', RESNET50, 'pit-ti_3rdparty_8xb128_in1k', '-o', out,
                        '--checkpoint', ckpt, '--recipe')
    printed = capsys.readouterr().out
    assert 'model.head.in_channels: 2048 -> 256' in printed and f'wrote {out}' in printed
    cfg, model = build_written(str(out), with_weights=True)
    assert cfg.model.neck is None and cfg.model.head.in_channels == 256
    assert_loads_strictly(model, {k: v for k, v in pit.state_dict().items()})
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64), mode='tensor').shape == (2, 1000)
    # --recipe: AdamW without weight decay on norms, biases, the position embedding and the class token
    optim = cfg.optim_wrapper
    assert optim.optimizer.type == 'AdamW' and optim.paramwise_cfg.custom_keys == {
        '.pos_embed': dict(decay_mult=0.0), '.cls_token': dict(decay_mult=0.0)}
    from mmengine.optim import build_optim_wrapper
    decay = {id(p): group['weight_decay'] for group in build_optim_wrapper(model, optim).optimizer.param_groups
             for p in group['params']}
    backbone = model.backbone
    assert decay[id(backbone.pos_embed)] == decay[id(backbone.cls_token)] == decay[id(backbone.norm.weight)] == 0
    assert decay[id(backbone.stages[0].blocks[0].attn.qkv.weight)] == 0.05

    config = tiny_cls_config(str(out), str(tmp_path), digits_root, num_images=8)
    run_tool_in_process(monkeypatch, 'train', config, '--work-dir', tmp_path / 'work')
    assert osp.exists(tmp_path / 'work' / 'epoch_1.pth')


def test_distilled_pit_gets_a_head_for_both_tokens(tmp_path):
    out = tmp_path / 'resnet50_pit_distilled.py'
    result = swap_backbone(RESNET50, 'pit-ti-distilled_3rdparty_8xb128_in1k', out,
                           backbone_args=dict(arch=tiny(PiT, out_type='featmap')))
    assert result.changes == ["model.neck: dict(type='GlobalAveragePooling') -> None",
                              "model.head.type: 'LinearClsHead' -> 'vitzoo.DistilledLinearClsHead'",
                              "model.head.distill_type: '<unset>' -> 'none'", 'model.head.in_channels: 2048 -> 32']
    cfg, model = build_written(str(out))
    assert cfg.model.backbone.distilled and cfg.model.backbone.out_type == 'cls_token'
    with torch.no_grad():
        logits = model.head.forward_logits(model.extract_feat(torch.rand(2, 3, 64, 64)))
    assert [x.shape for x in logits] == [(2, 1000), (2, 1000)]


def test_upernet_with_davit_trains(tmp_path, monkeypatch, toy_root):
    arch = tiny(DaViT)
    ckpt = classifier_checkpoint(tmp_path / 'davit.pth', 'davit-tiny_3rdparty_in1k', arch)
    out = tmp_path / 'upernet_davit.py'
    result = swap_backbone(UPERNET, 'davit-tiny_3rdparty_in1k', out, checkpoint=str(tmp_path / 'davit.pth'),
                           backbone_args=dict(arch=arch))
    assert result.changes == ["model.pretrained: 'open-mmlab://resnet50_v1c' -> None",
                              'model.decode_head.in_channels: [256, 512, 1024, 2048] -> [16, 32, 48, 64]',
                              'model.auxiliary_head.in_channels: 1024 -> 48']  # the stride-16 map
    cfg, model = build_written(str(out), with_weights=True)
    assert_loads_strictly(model, ckpt)
    maps = forward(model, 'mmseg')
    assert [m.shape[1] for m in maps] == list(model.decode_head.in_channels)
    assert maps[model.auxiliary_head.in_index].shape[1] == model.auxiliary_head.in_channels

    config = tmp_path / 'toy_upernet.py'
    n = len(ADE20K_CLASSES)
    config.write_text(f'''
_base_ = {str(out)!r}
data_root = {toy_root!r} + '/ade/ADEChallengeData2016'
metainfo = dict(classes={ADE20K_CLASSES!r})
model = dict(data_preprocessor=dict(size=(64, 64)), decode_head=dict(channels=16, num_classes={n}),
             auxiliary_head=dict(channels=16, num_classes={n}))
{toy_ade_data(val_images=2)}
train_cfg = dict(max_iters=2, val_interval=100)  # no validation: tests/test_dense.py runs mmseg's
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
''')
    run_tool_in_process(monkeypatch, 'train', config, '--work-dir', tmp_path / 'work')
    assert osp.exists(tmp_path / 'work' / 'iter_2.pth')


@pytest.mark.slow  # 35 s; in CI the Mask R-CNN and Panoptic FPN swaps run their loss step through the tool
def test_retinanet_with_lvt_trains(tmp_path, monkeypatch, toy_root):
    """LVT has no direct download: without --checkpoint the config starts from random weights, says
    so and warns."""
    out = tmp_path / 'retinanet_lvt.py'
    result = swap_backbone(RETINANET, 'lvt_3rdparty_8xb128_in1k', out, backbone_args=dict(arch=tiny(LVT)))
    assert result.changes == ['model.neck.in_channels: [256, 512, 1024, 2048] -> [16, 16, 32, 64]']
    assert len(result.warnings) == 1 and 'lvt_imagenet.pth.tar' in result.warnings[0]
    text = out.read_text()
    assert 'init_cfg=None' in text and '# lvt_3rdparty_8xb128_in1k has no direct download' in text
    cfg, model = build_written(str(out))
    assert cfg.model.neck.start_level == 1  # RetinaNet's FPN still skips the stride-4 map
    maps = forward(model, 'mmdet')
    assert [m.shape[1] for m in maps] == list(model.neck.in_channels)

    config = tmp_path / 'toy_retinanet.py'
    config.write_text(f'''
_base_ = {str(out)!r}
data_root = {toy_root!r} + '/coco/'
metainfo = dict(classes={COCO_THING_CLASSES!r})
model = dict(neck=dict(out_channels=32),
             bbox_head=dict(num_classes={len(COCO_THING_CLASSES)}, in_channels=32, feat_channels=32, stacked_convs=1))
resize = dict(type='Resize', scale=(128, 96), keep_ratio=True)
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True), resize,
                  dict(type='PackDetInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), resize, dict(type='LoadAnnotations', with_bbox=True),
                 dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                                       'scale_factor'))]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(
    data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_train2017.json',
    data_prefix=dict(img='train2017/'), pipeline=train_pipeline, indices=4))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(
    data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_val2017.json',
    data_prefix=dict(img='val2017/'), pipeline=test_pipeline, indices=2))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=2)  # no validation
default_hooks = dict(logger=dict(interval=1))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
''')
    run_tool_in_process(monkeypatch, 'train', config, '--work-dir', tmp_path / 'work')
    assert osp.exists(tmp_path / 'work' / 'epoch_1.pth')


# ------------------------------------------------------------------------------ clear refusals


def test_neck_taking_one_map_refuses_four(tmp_path):
    """YOLOF's DilatedEncoder reads one map: asked for four, the swap names the key it cannot set."""
    out = tmp_path / 'yolof.py'
    with pytest.raises(SwapError, match=r'model\.neck\.in_channels: DilatedEncoder takes a single map \(2048 '
                                        r'channels in the source\), but --out-indices asks the backbone for 4'):
        swap_backbone(YOLOF, 'lvt_3rdparty_8xb128_in1k', out, out_indices=(0, 1, 2, 3))
    assert not out.exists()
    # by default it gets the one map at the source's stride (32)
    result = swap_backbone(YOLOF, 'lvt_3rdparty_8xb128_in1k', out, backbone_args=dict(arch=tiny(LVT)))
    assert result.changes == ['model.neck.in_channels: 2048 -> 64']
    assert Config.fromfile(str(out)).model.backbone.out_indices == (3, )


def test_neck_without_a_channel_argument_is_refused(tmp_path):
    source = tmp_path / 'upernet_f2p.py'
    source.write_text(f"_base_ = {UPERNET!r}\n"
                      "model = dict(neck=dict(type='Feature2Pyramid', embed_dim=256, rescales=[4, 2, 1, 0.5]))\n")
    with pytest.raises(SwapError, match=r"model\.neck: cannot tell which argument of Feature2Pyramid takes the "
                                        r"backbone's channels \(it has no in_channels; its arguments: embed_dim"):
        swap_backbone(str(source), 'lvt_3rdparty_8xb128_in1k', tmp_path / 'out.py')


def test_fewer_levels_follow_through_start_level_or_are_refused(tmp_path):
    """--out-indices 1 2 3 (strides 8-32): RetinaNet's FPN, which skips stride 4, reads them from level
    0; Mask R-CNN's needs the stride-4 map and is refused, naming the key."""
    result = swap_backbone(RETINANET, 'lvt_3rdparty_8xb128_in1k', tmp_path / 'r.py', out_indices=(1, 2, 3),
                           backbone_args=dict(arch=tiny(LVT)))
    assert result.changes == ['model.neck.start_level: 1 -> 0',
                              'model.neck.in_channels: [256, 512, 1024, 2048] -> [16, 32, 64]']
    with pytest.raises(SwapError, match=r'model\.neck\.start_level: FPN reads the maps of strides \(4, 8, 16, 32\)'):
        swap_backbone(MASK_RCNN, 'lvt_3rdparty_8xb128_in1k', tmp_path / 'm.py', out_indices=(1, 2, 3))


def test_the_check_catches_an_unadapted_neck(tmp_path, monkeypatch):
    """The built model runs before anything is written: with the neck's widths left as they were,
    the swap fails in the loss step and writes nothing."""
    monkeypatch.setattr(swap.ConsumerAdapter, 'multi_level_neck', lambda *args: None)
    out = tmp_path / 'broken.py'
    with pytest.raises(SwapError, match='the swapped model fails in a loss step on a random batch'):
        swap_backbone(RETINANET, 'lvt_3rdparty_8xb128_in1k', out, backbone_args=dict(arch=tiny(LVT)))
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_bad_arguments_name_the_culprit(tmp_path, monkeypatch):
    out = tmp_path / 'out.py'
    out.write_text('# mine\n')
    with pytest.raises(SwapError, match='out.py exists; pass --overwrite'):
        swap_backbone(RETINANET, 'lvt_3rdparty_8xb128_in1k', out)
    assert out.read_text() == '# mine\n'
    with pytest.raises(SwapError, match=r"no such config in mmseg .*Did you mean "
                                        r"'upernet/upernet_r50_4xb4-80k_ade20k-512x512.py'"):
        swap_backbone('mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x1024.py', 'lvt_3rdparty_8xb128_in1k',
                      tmp_path / 'a.py')
    with pytest.raises(SwapError, match=r"'vitzoo.Swin' is not a vitzoo backbone; TYPE is one of vitzoo.DaViT"):
        swap_backbone(RETINANET, 'vitzoo.Swin:tiny', tmp_path / 'a.py')
    with pytest.raises(SwapError, match=r"unknown SVT arch 'huge'"):
        swap_backbone(RETINANET, 'vitzoo.SVT:huge', tmp_path / 'a.py')
    with pytest.raises(SwapError, match=r"Did you mean 'davit-tiny_3rdparty_in1k'"):
        swap_backbone(RETINANET, 'davit-tiny', tmp_path / 'a.py')
    with pytest.raises(SwapError, match=r"--checkpoint 'nope.pth' does not exist"):
        swap_backbone(RETINANET, 'lvt_3rdparty_8xb128_in1k', tmp_path / 'a.py', checkpoint='nope.pth')
    with pytest.raises(SwapError, match=r'LVT takes no arguments \[.window_size.\]'):
        swap_backbone(RETINANET, 'lvt_3rdparty_8xb128_in1k', tmp_path / 'a.py', backbone_args=dict(window_size=7))
    with pytest.raises(SystemExit, match='swap_backbone: .*out.py exists; pass --overwrite.*\nNothing written'):
        run_tool_in_process(monkeypatch, 'misc/swap_backbone', RETINANET, 'lvt_3rdparty_8xb128_in1k', '-o', out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.py']


def test_type_arch_finds_the_classifier_weights():
    backbone = swap.resolve_backbone('vitzoo.SVT:s')
    assert backbone.info.name == 'twins-svt-small_3rdparty_8xb128_in1k' and backbone.args['arch'] == 'small'
    assert swap.resolve_backbone('PiT:ti').info.name == 'pit-ti_3rdparty_8xb128_in1k'  # not the distilled one
    assert swap.resolve_backbone('vitzoo.LVT:lvt').info.name == 'lvt_3rdparty_8xb128_in1k'
    assert {row.backbone for row in ROWS} == {PCPVT, SVT, DaViT, PiT, LVT}  # every family swapped above
