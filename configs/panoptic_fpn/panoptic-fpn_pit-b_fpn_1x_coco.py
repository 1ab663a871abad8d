_base_ = './panoptic-fpn_pit-s_fpn_1x_coco.py'
checkpoint = 'checkpoints/pit_b_820.pth'
model = dict(
    backbone=dict(arch='b', init_cfg=dict(checkpoint=checkpoint)),
    neck=dict(in_channels=[256, 256, 512, 1024]))
