# PiT-XS distilled: the backbone with its distillation token (DeiT-style ImageNet weights).
_base_ = './panoptic-fpn_pit-xs_fpn_1x_coco.py'
checkpoint = 'checkpoints/pit_xs_distill_791.pth'
model = dict(backbone=dict(distilled=True, init_cfg=dict(checkpoint=checkpoint)))
