_base_ = './segformer_pit-s_8xb2-160k_ade20k-512x512.py'
checkpoint = 'checkpoints/pit_xs_781.pth'
model = dict(
    backbone=dict(arch='xs', init_cfg=dict(checkpoint=checkpoint)),
    decode_head=dict(in_channels=[96, 96, 192, 384], channels=256))
