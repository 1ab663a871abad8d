# Twins-SVT-S: a LayerNorm on every output (SVT's default, as in the official dense code).
_base_ = './segformer_twins-pcpvt-s_8xb2-160k_ade20k-512x512.py'
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/twins/twins-svt-small_3rdparty_8xb128_in1k_20220126-8fe5205b.pth'  # noqa: E501
model = dict(
    backbone=dict(type='vitzoo.SVT', init_cfg=dict(checkpoint=checkpoint)),
    decode_head=dict(in_channels=[64, 128, 256, 512]))
