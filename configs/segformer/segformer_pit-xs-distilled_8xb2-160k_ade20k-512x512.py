# PiT-XS distilled: the backbone with its distillation token (DeiT-style ImageNet weights).
_base_ = './segformer_pit-xs_8xb2-160k_ade20k-512x512.py'
checkpoint = 'checkpoints/pit_xs_distill_791.pth'
model = dict(backbone=dict(distilled=True, init_cfg=dict(checkpoint=checkpoint)))
