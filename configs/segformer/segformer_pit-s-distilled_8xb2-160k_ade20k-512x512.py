# PiT-S distilled: the backbone with its distillation token (DeiT-style ImageNet weights).
_base_ = './segformer_pit-s_8xb2-160k_ade20k-512x512.py'
checkpoint = 'checkpoints/pit_s_distill_819.pth'
model = dict(backbone=dict(distilled=True, init_cfg=dict(checkpoint=checkpoint)))
