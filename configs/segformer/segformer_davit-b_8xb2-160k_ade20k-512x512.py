_base_ = './segformer_davit-t_8xb2-160k_ade20k-512x512.py'
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/davit/davit-base_3rdparty_in1k_20221116-19e0d956.pth'  # noqa: E501
model = dict(
    backbone=dict(arch='base', init_cfg=dict(checkpoint=checkpoint)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]))
