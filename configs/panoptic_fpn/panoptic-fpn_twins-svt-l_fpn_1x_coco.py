_base_ = './panoptic-fpn_twins-svt-b_fpn_1x_coco.py'
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/twins/twins-svt-large_3rdparty_16xb64_in1k_20220126-4817645f.pth'  # noqa: E501
model = dict(
    backbone=dict(arch='large', init_cfg=dict(checkpoint=checkpoint)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
