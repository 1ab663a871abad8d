# Panoptic FPN on Twins-PCPVT-S, COCO panoptic, 1x schedule with AdamW (lr 1e-4, weight decay
# 0.05), batch 16 (8 GPUs x 2); FPN 256 channels and mmdet's R-50 heads. Drop path 0.1 (0.2 for
# B/L). The backbone returns its four stage maps without output norms (official dense code) and
# starts from mmpretrain's ImageNet classifier (any Twins checkpoint layout loads).
_base_ = ['../_base_/models/panoptic_fpn.py', '../_base_/datasets/coco_panoptic.py',
          '../_base_/schedules/schedule_1x.py', '../_base_/det_runtime.py']
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/twins/twins-pcpvt-small_3rdparty_8xb128_in1k_20220126-ef23c132.pth'  # noqa: E501
model = dict(
    backbone=dict(type='vitzoo.PCPVT', arch='small', drop_path_rate=0.1,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 320, 512]))
