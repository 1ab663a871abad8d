_base_ = './panoptic-fpn_twins-svt-s_fpn_1x_coco.py'
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/twins/twins-svt-base_3rdparty_8xb128_in1k_20220126-e31cc8e9.pth'  # noqa: E501
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.2, init_cfg=dict(checkpoint=checkpoint)),
    neck=dict(in_channels=[96, 192, 384, 768]))
