# PiT-S distilled: the backbone with its distillation token (DeiT-style ImageNet weights).
_base_ = './panoptic-fpn_pit-s_fpn_1x_coco.py'
checkpoint = 'checkpoints/pit_s_distill_819.pth'
model = dict(backbone=dict(distilled=True, init_cfg=dict(checkpoint=checkpoint)))
