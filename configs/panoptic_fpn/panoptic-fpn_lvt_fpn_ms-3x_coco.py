# LVT's published Panoptic FPN 3x setup: the 1x model with AdamW lr 3e-4 (weight decay 1e-4),
# 36 epochs with steps at 24 and 33 (the original repeats the dataset 3 times over the 1x
# schedule: the same steps), multi-scale training with the shorter side in 640-800, 8 GPUs x 8.
# Published: PQ 42.8 / PQ_th 49.5 / PQ_st 32.6 on COCO val (43.0 on test-dev).
_base_ = ['../_base_/models/panoptic_fpn_lvt.py', '../_base_/datasets/coco_panoptic.py',
          '../_base_/schedules/schedule_ms-3x.py', '../_base_/det_runtime.py']
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadPanopticAnnotations'),
    dict(type='RandomResize', scale=[(1333, 640), (1333, 800)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=8, num_workers=8, dataset=dict(pipeline=train_pipeline))
optim_wrapper = dict(optimizer=dict(lr=3e-4, weight_decay=1e-4))
auto_scale_lr = dict(base_batch_size=64)
