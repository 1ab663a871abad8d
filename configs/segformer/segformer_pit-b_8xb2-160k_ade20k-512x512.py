_base_ = './segformer_pit-s_8xb2-160k_ade20k-512x512.py'
checkpoint = 'checkpoints/pit_b_820.pth'
model = dict(
    backbone=dict(arch='b', init_cfg=dict(checkpoint=checkpoint)),
    decode_head=dict(in_channels=[256, 256, 512, 1024]))
