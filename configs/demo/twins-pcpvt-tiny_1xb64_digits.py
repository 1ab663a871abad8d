# The README demo: a tiny Twins-PCPVT trained on scikit-learn's handwritten digits (32x32,
# exported by tools/dataset_converters/digits_to_imagenet.py) on 2 CPU cores in a few minutes.
_base_ = ['../_base_/default_runtime.py']

model = dict(
    type='vitzoo.ImageClassifier',
    backbone=dict(
        type='vitzoo.PCPVT',
        arch=dict(
            embed_dims=[32, 64, 128, 128],
            depths=[1, 1, 2, 1],
            num_heads=[1, 2, 4, 4],
            mlp_ratios=[4, 4, 4, 4],
            sr_ratios=[4, 2, 1, 1],
            patch_sizes=[2, 2, 2, 2],
        ),
        out_indices=(3, ),
        norm_after_stage=(False, False, False, True),
        drop_path_rate=0.1,
    ),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=128,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
    ),
    data_preprocessor=dict(num_classes=10, mean=[127.5] * 3, std=[127.5] * 3, to_rgb=True),
)

data_root = 'data/digits'
# Class names, saved in the checkpoints' dataset_meta (vitzoo.inference_model's pred_class).
metainfo = dict(classes=[str(d) for d in range(10)])
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=32, crop_ratio_range=(0.75, 1.0), aspect_ratio_range=(0.8, 1.25)),
    dict(type='PackInputs'),
]
# Resized like the training crops, so that an odd-sized image cannot pad (and spoil) its whole batch.
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(32, 32)), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=64,
    num_workers=2,
    dataset=dict(type='CustomDataset', data_root=data_root, ann_file='meta/train.txt', data_prefix='train',
                 metainfo=metainfo, pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=128,
    num_workers=2,
    dataset=dict(type='CustomDataset', data_root=data_root, ann_file='meta/val.txt', data_prefix='val',
                 metainfo=metainfo, pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

max_epochs = 15
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, end=2, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=2),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=5)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=5, max_keep_ckpts=1, save_last=True),
)
randomness = dict(seed=0)
