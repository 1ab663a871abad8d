_base_ = './panoptic-fpn_davit-t_fpn_1x_coco.py'
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/davit/davit-base_3rdparty_in1k_20221116-19e0d956.pth'  # noqa: E501
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.2, init_cfg=dict(checkpoint=checkpoint)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
