# PiT-B distilled: the backbone with its distillation token (DeiT-style ImageNet weights).
_base_ = './panoptic-fpn_pit-b_fpn_1x_coco.py'
checkpoint = 'checkpoints/pit_b_distill_840.pth'
model = dict(backbone=dict(distilled=True, init_cfg=dict(checkpoint=checkpoint)))
