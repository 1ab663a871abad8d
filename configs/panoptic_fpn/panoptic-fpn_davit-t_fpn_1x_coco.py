# Panoptic FPN on DaViT-T, COCO panoptic, 1x schedule with AdamW (lr 1e-4, weight decay 0.05),
# batch 16; FPN 256 channels and mmdet's R-50 heads. A LayerNorm on every output; drop path 0.1
# (0.2 for S/B) as the official DaViT 1x detection configs.
_base_ = ['../_base_/models/panoptic_fpn.py', '../_base_/datasets/coco_panoptic.py',
          '../_base_/schedules/schedule_1x.py', '../_base_/det_runtime.py']
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/davit/davit-tiny_3rdparty_in1k_20221116-700fdf7d.pth'  # noqa: E501
model = dict(
    backbone=dict(type='vitzoo.DaViT', arch='tiny', drop_path_rate=0.1,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=dict(in_channels=[96, 192, 384, 768]))
