_base_ = './segformer_pit-s_8xb2-160k_ade20k-512x512.py'
checkpoint = 'checkpoints/pit_ti_730.pth'
model = dict(
    backbone=dict(arch='ti', init_cfg=dict(checkpoint=checkpoint)),
    decode_head=dict(in_channels=[64, 64, 128, 256], channels=256))
