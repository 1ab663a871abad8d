"""Dense prediction: SegFormer (mmseg) and Panoptic FPN (mmdet) configs of every backbone family.

The training tests run the real configs through tools/train.py and tools/test.py on the toy
scenes of tools/dataset_converters/toy_dense_dataset.py (ADE20K and COCO-panoptic layouts), with
a tiny arch of the family's backbone and narrow heads: they test the pipeline, not the numbers.
The learning tests (``slow``) train the toy demo configs (the published LVT models) and check
that they learn: mIoU above a threshold, PQ above zero for things and for stuff.

Nothing here lists the families: the backbone classes come from the contract table
(tests/backbone_table.py, which also gives the tiny arches), the configs of each from the model
index and the configs on disk (a dense config belongs to the classifiers whose backbone weights
its backbone holds: same keys and shapes, up to what the dense backbone declares in
``pretrained_missing_ok`` and ``pretrained_unexpected_ok``).
"""
import functools
import glob
import math
import os.path as osp
import re
import sys
from typing import List, Tuple

import pytest
import torch
from mmengine.config import Config

from vitzoo.apis.model import ModelHub, ModelInfo

from backbone_table import BACKBONES, row_of
from helpers import REPO, free_port, run_tool, toy_ade_data

sys.path.insert(0, osp.join(REPO, 'tools', 'dataset_converters'))
from toy_dense_dataset import ADE20K_CLASSES, CATEGORIES, COCO_STUFF_CLASSES, COCO_THING_CLASSES, generate  # noqa: E402

SEG_DIR = osp.join(REPO, 'configs', 'segformer')
PAN_DIR = osp.join(REPO, 'configs', 'panoptic_fpn')
ALL_CONFIGS = sorted(glob.glob(osp.join(SEG_DIR, '*.py')) + glob.glob(osp.join(PAN_DIR, '*.py')))
SEG_TOY = osp.join(SEG_DIR, 'segformer_lvt_1xb8-1k_toy-64x64.py')
PAN_TOY = osp.join(PAN_DIR, 'panoptic-fpn_lvt_fpn_1xb4-toy_coco.py')
TASK_DIRS = {'seg': SEG_DIR, 'panoptic': PAN_DIR}
backbone_ids = [b.__name__ for b in BACKBONES]


@functools.lru_cache(maxsize=None)
def load(config: str) -> Config:
    return Config.fromfile(config)


def backbone_args(config: str) -> Tuple[type, dict]:
    """The backbone class of a config and its other arguments."""
    from vitzoo.registry import MODELS
    args = dict(load(config).model.backbone)
    return MODELS.get(args.pop('type')), args


def starts_pretrained(config: str) -> bool:
    return (backbone_args(config)[1].get('init_cfg') or {}).get('type') == 'Pretrained'


@functools.lru_cache(maxsize=None)
def meta_backbone(config: str) -> torch.nn.Module:
    """The config's backbone, built without memory (meta tensors)."""
    backbone, args = backbone_args(config)
    args.pop('init_cfg', None)
    with torch.device('meta'):
        return backbone(**args)


def matches_any(patterns, key: str) -> bool:
    return any(re.match(pattern, key) for pattern in patterns)


def holds_weights_of(dense_config: str, classifier: ModelInfo) -> bool:
    """Whether the dense config's backbone takes the classifier's backbone weights: the same class, the
    same shapes, and the keys only one of them has declared by the dense backbone."""
    dense, ours = meta_backbone(dense_config), meta_backbone(classifier.config)
    if type(dense) is not type(ours):
        return False
    dense_sd, cls_sd = dense.state_dict(), ours.state_dict()
    return (all(dense_sd[k].shape == cls_sd[k].shape for k in set(dense_sd) & set(cls_sd))
            and all(matches_any(dense.pretrained_missing_ok, k) for k in set(dense_sd) - set(cls_sd))
            and all(matches_any(dense.pretrained_unexpected_ok, k) for k in set(cls_sd) - set(dense_sd)))


def published_classifiers() -> List[ModelInfo]:
    return [info for info in ModelHub.all() if info.task == 'Image Classification'
            and (info.weights or (info.converted_from or {}).get('File'))]


def dense_configs_from(info: ModelInfo, task: str) -> List[str]:
    """The ``task`` configs starting from pretrained weights that hold the classifier ``info``'s."""
    return [c for c in ALL_CONFIGS
            if osp.dirname(c) == TASK_DIRS[task] and starts_pretrained(c) and holds_weights_of(c, info)]


@functools.lru_cache(maxsize=None)
def smallest_classifier(backbone: type) -> ModelInfo:
    """The published classifier with the fewest parameters among those of ``backbone``."""
    return min((i for i in published_classifiers() if backbone_args(i.config)[0] is backbone), key=lambda i: i.params)


def dense_config(backbone: type, task: str) -> str:
    """The first ``task`` config (by name) starting from ``backbone``'s smallest classifier."""
    return dense_configs_from(smallest_classifier(backbone), task)[0]


@pytest.fixture(scope='session')
def toy_dense_root(tmp_path_factory):
    """The toy scenes in the ADE20K (``ade/ADEChallengeData2016``) and COCO-panoptic (``coco``) layouts."""
    root = str(tmp_path_factory.mktemp('toy_dense'))
    generate(root, num_train=64, num_val=16)
    return root


def build_model(cfg: Config):
    from mmengine.registry import init_default_scope

    from vitzoo.engine.runtime import replace_syncbn
    init_default_scope(cfg.default_scope)
    registry = __import__(f'{cfg.default_scope}.registry', fromlist=['MODELS']).MODELS
    return registry.build(replace_syncbn(cfg.model))


def data_overrides(config: str, root: str) -> str:
    """Config lines that point a SegFormer or Panoptic FPN config at the toy scenes."""
    if osp.dirname(config) == SEG_DIR:
        return f'''
data_root = {root!r} + '/ade/ADEChallengeData2016'
metainfo = dict(classes={ADE20K_CLASSES!r})
train_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo))
val_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo))
test_dataloader = val_dataloader
'''
    return f'''
data_root = {root!r} + '/coco/'
metainfo = dict(classes={COCO_THING_CLASSES + COCO_STUFF_CLASSES!r}, thing_classes={COCO_THING_CLASSES!r},
                stuff_classes={COCO_STUFF_CLASSES!r})
train_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo))
val_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/panoptic_val2017.json',
                     seg_prefix=data_root + 'annotations/panoptic_val2017/', nproc=1)
test_evaluator = val_evaluator
'''


def tiny_dense_config(config: str, out_dir: str, root: str, iters: int = 2) -> str:
    """Write a config that trains ``config`` (with a tiny backbone and narrow heads) for ``iters``
    iterations on the toy scenes, 64x64 crops (SegFormer) or the 128x96 images (Panoptic FPN)."""
    backbone, args = backbone_args(config)
    arch = row_of(backbone, **args).arch  # the contract table's tiny arch of the family
    channels = backbone.describe_outputs(**dict(args, arch=arch))['channels']
    if 'arch' in args:  # the base config names an arch (or gives a dict): replace it, never merge into it
        arch = dict(_delete_=True, **arch)
    path = osp.join(out_dir, 'tiny_' + osp.basename(config))
    common = f'''
_base_ = {config!r}
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={iters}, max_keep_ckpts=1))
randomness = dict(seed=0)
'''
    if osp.dirname(config) == SEG_DIR:
        task = f'''
model = dict(data_preprocessor=dict(size=(64, 64)),
             backbone=dict(arch={arch!r}, init_cfg=None),
             decode_head=dict(in_channels={channels!r}, channels=32, num_classes={len(ADE20K_CLASSES)}))
{toy_ade_data(val_images=4)}
train_cfg = dict(max_iters={iters}, val_interval={iters})
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
'''
    else:
        nt, ns = len(COCO_THING_CLASSES), len(COCO_STUFF_CLASSES)
        task = f'''
model = dict(
    backbone=dict(arch={arch!r}, init_cfg=None),
    neck=dict(in_channels={channels!r}, out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        bbox_head=dict(in_channels=32, fc_out_channels=64, num_classes={nt}),
        mask_roi_extractor=dict(out_channels=32),
        mask_head=dict(num_convs=1, in_channels=32, conv_out_channels=32, num_classes={nt})),
    semantic_head=dict(in_channels=32, inner_channels=16, norm_cfg=dict(type='GN', num_groups=4),
                       num_things_classes={nt}, num_stuff_classes={ns}),
    panoptic_fusion_head=dict(num_things_classes={nt}, num_stuff_classes={ns}),
    train_cfg=dict(rpn_proposal=dict(max_per_img=100), rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rcnn=dict(score_thr=0.0), panoptic=dict(stuff_area_limit=48)))
resize = dict(type='Resize', scale=(128, 96), keep_ratio=True)  # the toy images' size
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadPanopticAnnotations'), resize,
                  dict(type='PackDetInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), resize, dict(type='LoadPanopticAnnotations'),
                 dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                                       'scale_factor'))]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline,
                                     indices={2 * iters}))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline, indices=4))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1, val_interval=1)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
'''
    with open(path, 'w') as f:
        f.write(common + data_overrides(config, root) + task)
    return path


def metrics_of(output: str) -> dict:
    """The ``name: value`` lines tools/test.py prints."""
    return {k: float(v) for k, v in re.findall(r'^([\w/]+): ([-\d.]+|nan)$', output, re.M)}


# ----------------------------------------------------------------------------------------- configs

def test_every_backbone_variant_has_both_dense_configs():
    """Every published classifier has a SegFormer and a Panoptic FPN config whose backbone takes its
    weights, and each dense config starting from pretrained weights takes those of a classifier."""
    classifiers = published_classifiers()
    assert {backbone_args(i.config)[0] for i in classifiers} == set(BACKBONES)
    for info in classifiers:
        for task in TASK_DIRS:
            assert dense_configs_from(info, task), f'{info.name} has no {task} config'
    for config in ALL_CONFIGS:
        if starts_pretrained(config):
            assert any(holds_weights_of(config, info) for info in classifiers), config
    names = {osp.basename(p) for p in ALL_CONFIGS}
    assert 'panoptic-fpn_lvt_fpn_ms-3x_coco.py' in names


@pytest.mark.parametrize('config', ALL_CONFIGS, ids=osp.basename)
def test_config_builds_and_channels_match(config):
    """Every config builds; the backbone's four maps (strides 4-32) fit the head/neck widths."""
    cfg = Config.fromfile(config)
    assert cfg.custom_imports['imports'] == ['vitzoo.models']
    init = cfg.model.backbone.init_cfg
    if 'toy' not in config:
        assert init.type == 'Pretrained' and init.prefix == 'backbone.' and init.checkpoint
    cfg.model.backbone.init_cfg = None
    model = build_model(cfg).eval()
    with torch.no_grad():
        outs = model.backbone(torch.rand(1, 3, 64, 96))
    consumer = model.decode_head if cfg.default_scope == 'mmseg' else model.neck
    assert [o.shape[1] for o in outs] == list(consumer.in_channels)
    assert [tuple(o.shape[2:]) for o in outs] == [(16, 24), (8, 12), (4, 6), (2, 3)]


def test_published_lvt_setups():
    """SegFormer-LVT and Panoptic FPN-LVT as published in LVT's dense-prediction configs."""
    seg = Config.fromfile(osp.join(SEG_DIR, 'segformer_lvt_8xb2-160k_ade20k-512x512.py'))
    assert seg.model.decode_head.channels == 256 and seg.model.decode_head.norm_cfg.type == 'SyncBN'
    assert seg.optim_wrapper.optimizer.lr == 6e-5 and seg.optim_wrapper.optimizer.weight_decay == 0.01
    keys = seg.optim_wrapper.paramwise_cfg.custom_keys
    assert keys['head'].lr_mult == 10 and keys['norm'].decay_mult == 0 and keys['pos_block'].decay_mult == 0
    warmup, poly = seg.param_scheduler
    assert (warmup.type, warmup.end, poly.type, poly.power, poly.end) == ('LinearLR', 1500, 'PolyLR', 1.0, 160000)
    assert seg.train_cfg.max_iters == 160000 and seg.train_dataloader.batch_size * 8 == 16
    seg_model = build_model(_without_init(seg))
    assert sum(p.numel() for p in seg_model.parameters()) == pytest.approx(3.9e6, rel=0.02)

    for name, lr, epochs in (('1x', 4e-4, 12), ('ms-3x', 3e-4, 36)):
        pan = Config.fromfile(osp.join(PAN_DIR, f'panoptic-fpn_lvt_fpn_{name}_coco.py'))
        m = pan.model
        assert (m.neck.out_channels, m.rpn_head.feat_channels, m.roi_head.bbox_head.fc_out_channels,
                m.roi_head.mask_head.conv_out_channels, m.semantic_head.inner_channels,
                m.semantic_head.norm_cfg.num_groups) == (96, 96, 160, 96, 48, 12)
        assert pan.optim_wrapper.optimizer.type == 'AdamW' and pan.optim_wrapper.optimizer.lr == lr
        assert pan.optim_wrapper.optimizer.weight_decay == 1e-4 and pan.train_dataloader.batch_size == 8
        assert pan.train_cfg.max_epochs == epochs
    assert pan.train_pipeline[2].scale == [(1333, 640), (1333, 800)]
    assert pan.param_scheduler[1].milestones == [24, 33]
    pan_model = build_model(_without_init(pan))
    assert sum(p.numel() for p in pan_model.parameters()) == pytest.approx(5.4e6, rel=0.02)
    # LVT's num_upsample=[0, 1, 2, 3] is mmdet 3.x's behaviour: level i is upsampled i times
    head = pan_model.semantic_head
    assert [layer.num_upsample for layer in head.conv_upsample_layers] == [0, 1, 2, 3]
    assert [layer.num_layers for layer in head.conv_upsample_layers] == [1, 1, 2, 3]


def _without_init(cfg: Config) -> Config:
    cfg.model.backbone.init_cfg = None
    return cfg


# -------------------------------------------------------------------------- pretrained checkpoints

@pytest.fixture(scope='module')
def cls_checkpoints(tmp_path_factory):
    """A randomly initialised ImageNet classifier of every family, saved as a checkpoint."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    tmp = tmp_path_factory.mktemp('cls_ckpt')
    out = {}
    for backbone in BACKBONES:
        info = smallest_classifier(backbone)
        model = MODELS.build(Config.fromfile(info.config).model)
        path = str(tmp / f'{backbone.__name__}.pth')
        torch.save(dict(state_dict=model.state_dict(), meta=dict(config=info.config)), path)
        out[backbone] = (path, {k[len('backbone.'):]: v for k, v in model.state_dict().items()
                                if k.startswith('backbone.')})
    return out


@pytest.mark.parametrize('backbone', BACKBONES, ids=backbone_ids)
def test_classification_checkpoint_loads_into_dense_model(cls_checkpoints, backbone):
    """Every tensor of the classifier's backbone loads, except those the dense backbone declares it
    lacks; the dense backbone's other tensors are those it declares classifiers never hold."""
    path, cls_backbone = cls_checkpoints[backbone]
    cfg = Config.fromfile(dense_config(backbone, 'seg'))
    cfg.model.backbone.init_cfg.checkpoint = path
    model = build_model(cfg)
    model.init_weights()
    dense = model.backbone.state_dict()
    shared = set(dense) & set(cls_backbone)
    assert shared and all(torch.equal(dense[k], cls_backbone[k]) for k in shared)
    dense_only, cls_only = set(dense) - shared, set(cls_backbone) - shared
    assert all(matches_any(model.backbone.pretrained_missing_ok, k) for k in dense_only), dense_only
    assert all(matches_any(model.backbone.pretrained_unexpected_ok, k) for k in cls_only), cls_only


def test_panoptic_model_loads_classification_checkpoint(cls_checkpoints):
    from vitzoo.models import LVT
    path, cls_backbone = cls_checkpoints[LVT]
    cfg = Config.fromfile(osp.join(PAN_DIR, 'panoptic-fpn_lvt_fpn_1x_coco.py'))
    cfg.model.backbone.init_cfg.checkpoint = path
    model = build_model(cfg)
    model.init_weights()
    dense = model.backbone.state_dict()
    assert set(dense) == set(cls_backbone) and all(torch.equal(dense[k], cls_backbone[k]) for k in dense)


def test_missing_or_mismatched_checkpoint_is_a_clear_error(cls_checkpoints, tmp_path):
    cfg = Config.fromfile(osp.join(SEG_DIR, 'segformer_twins-svt-s_8xb2-160k_ade20k-512x512.py'))
    cfg.model.backbone.init_cfg.checkpoint = str(tmp_path / 'missing.pth')
    with pytest.raises(FileNotFoundError, match='missing.pth.*does not exist'):
        build_model(cfg).init_weights()
    unrelated = str(tmp_path / 'resnet.pth')
    torch.save(dict(state_dict={'conv1.weight': torch.zeros(64, 3, 7, 7), 'fc.weight': torch.zeros(10, 64)}),
               unrelated)
    cfg.model.backbone.init_cfg.checkpoint = unrelated
    with pytest.raises(RuntimeError, match='resnet.pth.*holds no weights for this backbone'):
        build_model(cfg).init_weights()
    from vitzoo.models import PCPVT, DaViT
    for other in (DaViT, PCPVT):  # another family; the same family with other widths
        cfg.model.backbone.init_cfg.checkpoint = cls_checkpoints[other][0]
        with pytest.raises(RuntimeError, match=f'{other.__name__}.pth.* does not fit this backbone'):
            build_model(cfg).init_weights()


# ------------------------------------------------------------------------------- tools, toy data

def test_toy_dataset_is_deterministic_and_valid(toy_dense_root, tmp_path):
    import json

    import numpy as np
    from panopticapi.utils import rgb2id
    from PIL import Image
    again = str(tmp_path / 'again')
    generate(again, num_train=64, num_val=16)
    for rel in ('coco/annotations/panoptic_val2017.json', 'ade/ADEChallengeData2016/annotations/training/'
                'ADE_train_00000005.png', 'coco/annotations/panoptic_train2017/000000000005.png'):
        assert open(osp.join(again, rel), 'rb').read() == open(osp.join(toy_dense_root, rel), 'rb').read()
    assert generate(again, num_train=64, num_val=16)['val2017'] == 16  # an identical dataset is kept
    with pytest.raises(SystemExit, match='other settings'):
        generate(again, num_train=8, num_val=16)
    with pytest.raises(SystemExit, match='not a toy dense dataset'):
        generate(osp.join(REPO, 'configs'))

    coco = json.load(open(osp.join(toy_dense_root, 'coco/annotations/panoptic_train2017.json')))
    assert {c['id']: c['isthing'] for c in coco['categories']} == {c[2]: c[4] for c in CATEGORIES}
    for ann in coco['annotations'][:8]:
        ids = rgb2id(np.array(Image.open(osp.join(toy_dense_root, 'coco/annotations/panoptic_train2017',
                                                  ann['file_name']))))
        assert set(np.unique(ids)) - {0} == {s['id'] for s in ann['segments_info']}
        for seg in ann['segments_info']:
            ys, xs = np.nonzero(ids == seg['id'])
            assert seg['area'] == len(ys)
            assert seg['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    label = np.array(Image.open(osp.join(toy_dense_root, 'ade/ADEChallengeData2016/annotations/training/'
                                         'ADE_train_00000001.png')))
    assert set(np.unique(label)) <= {0} | {c[1] for c in CATEGORIES}


def tool_runs():
    """Every (task, backbone) pair; CI runs each family once, alternating the tasks (every family
    builds both dense configs in CI above), ``make test-slow`` the other half."""
    for i, backbone in enumerate(BACKBONES):
        for j, task in enumerate(TASK_DIRS):
            marks = () if (i + j) % 2 == 0 else (pytest.mark.slow, )
            yield pytest.param(task, backbone, marks=marks, id=f'{task}-{backbone.__name__}')


@pytest.mark.parametrize('task, backbone', list(tool_runs()))
def test_train_and_test_tools(toy_dense_root, tmp_path, backbone, task):
    """A few iterations through tools/train.py, then tools/test.py reports a finite mIoU / PQ."""
    config = tiny_dense_config(dense_config(backbone, task), str(tmp_path), toy_dense_root)
    work_dir = str(tmp_path / 'work')
    run_tool('tools/train.py', config, '--work-dir', work_dir)
    checkpoint = open(osp.join(work_dir, 'last_checkpoint')).read().strip()
    metrics = metrics_of(run_tool('tools/test.py', config, checkpoint, '--work-dir', str(tmp_path / 'test')).stdout)
    keys = ['mIoU', 'aAcc'] if task == 'seg' else ['coco_panoptic/PQ', 'coco_panoptic/PQ_th', 'coco_panoptic/PQ_st']
    assert all(k in metrics and math.isfinite(metrics[k]) for k in keys), metrics


@pytest.mark.slow  # tests/test_tools.py runs tools/dist_train.sh in CI (a classifier)
def test_dist_train_on_two_cpu_processes(toy_dense_root, tmp_path):
    config = tiny_dense_config(osp.join(SEG_DIR, 'segformer_twins-pcpvt-s_8xb2-160k_ade20k-512x512.py'),
                               str(tmp_path), toy_dense_root)
    work_dir = str(tmp_path / 'work')
    proc = run_tool('tools/dist_train.sh', config, '2', '--work-dir', work_dir, env=dict(PORT=free_port()))
    log = proc.stdout + proc.stderr
    assert 'Distributed training: True' in log and re.search(r'mIoU: [\d.]+', log)
    assert osp.exists(osp.join(work_dir, 'iter_2.pth'))
    assert 'terminate called' not in proc.stderr


# ---------------------------------------------------------------------------------------- learning

@pytest.mark.slow
def test_segformer_lvt_learns_the_toy_scenes(toy_dense_root, tmp_path):
    """SegFormer-LVT from scratch, 200 iterations of 8 crops: mIoU above 70 on the held-out scenes
    (measured: 86.5; the demo config's 1000 iterations reach 92.5)."""
    config = osp.join(str(tmp_path), 'toy.py')
    with open(config, 'w') as f:
        f.write(f'_base_ = {SEG_TOY!r}\n' + data_overrides(SEG_TOY, toy_dense_root))
    work_dir = str(tmp_path / 'work')
    run_tool('tools/train.py', config, '--work-dir', work_dir, '--cfg-options', 'train_cfg.max_iters=200',
             'train_cfg.val_interval=200', 'param_scheduler.1.end=200', timeout=3600)
    metrics = metrics_of(run_tool('tools/test.py', config, osp.join(work_dir, 'iter_200.pth'),
                                  '--work-dir', str(tmp_path / 'test')).stdout)
    print('SegFormer-LVT toy metrics:', metrics)
    assert metrics['mIoU'] > 70, metrics


@pytest.mark.slow
def test_panoptic_fpn_lvt_learns_things_and_stuff(toy_dense_root, tmp_path):
    """Panoptic FPN-LVT from scratch, 3 epochs of 64 scenes (48 iterations): PQ above zero for things
    and for stuff, with the published test settings (score threshold 0.6; the stuff area limit
    scaled to the image). Measured: PQ_th / PQ_st 27.8 / 78.4 after 3 epochs, 79.3 / 92.5 after
    the demo's 12."""
    config = osp.join(str(tmp_path), 'toy.py')
    with open(config, 'w') as f:
        f.write(f'_base_ = {PAN_TOY!r}\n' + data_overrides(PAN_TOY, toy_dense_root))
    work_dir = str(tmp_path / 'work')
    run_tool('tools/train.py', config, '--work-dir', work_dir, '--cfg-options', 'train_cfg.max_epochs=3',
             'train_cfg.val_interval=3', timeout=3600)
    metrics = metrics_of(run_tool('tools/test.py', config, osp.join(work_dir, 'epoch_3.pth'),
                                  '--work-dir', str(tmp_path / 'test')).stdout)
    print('Panoptic FPN-LVT toy metrics:', metrics)
    assert metrics['coco_panoptic/PQ_th'] > 0 and metrics['coco_panoptic/PQ_st'] > 0, metrics
