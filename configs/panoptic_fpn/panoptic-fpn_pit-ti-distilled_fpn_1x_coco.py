# PiT-Ti distilled: the backbone with its distillation token (DeiT-style ImageNet weights).
_base_ = './panoptic-fpn_pit-ti_fpn_1x_coco.py'
checkpoint = 'checkpoints/pit_ti_distill_746.pth'
model = dict(backbone=dict(distilled=True, init_cfg=dict(checkpoint=checkpoint)))
