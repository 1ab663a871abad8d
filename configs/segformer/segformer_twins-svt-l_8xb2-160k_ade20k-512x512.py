_base_ = './segformer_twins-svt-b_8xb2-160k_ade20k-512x512.py'
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/twins/twins-svt-large_3rdparty_16xb64_in1k_20220126-4817645f.pth'  # noqa: E501
model = dict(
    backbone=dict(arch='large', init_cfg=dict(checkpoint=checkpoint)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]))
