# Panoptic FPN on PiT-S, COCO panoptic, 1x schedule with AdamW (lr 1e-4, weight decay 0.05),
# batch 16; FPN 256 channels and mmdet's R-50 heads; drop path 0.1. out_type='pyramid' gives
# four levels at strides 4/8/16/32 (channels C, C, 2C, 4C; see
# configs/segformer/segformer_pit-s_8xb2-160k_ade20k-512x512.py for the checkpoints).
_base_ = ['../_base_/models/panoptic_fpn.py', '../_base_/datasets/coco_panoptic.py',
          '../_base_/schedules/schedule_1x.py', '../_base_/det_runtime.py']
checkpoint = 'checkpoints/pit_s_809.pth'
model = dict(
    backbone=dict(type='vitzoo.PiT', arch='s', out_type='pyramid', drop_path_rate=0.1,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=dict(in_channels=[144, 144, 288, 576]))
