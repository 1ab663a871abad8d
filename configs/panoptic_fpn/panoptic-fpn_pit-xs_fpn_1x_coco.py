_base_ = './panoptic-fpn_pit-s_fpn_1x_coco.py'
checkpoint = 'checkpoints/pit_xs_781.pth'
model = dict(
    backbone=dict(arch='xs', init_cfg=dict(checkpoint=checkpoint)),
    neck=dict(in_channels=[96, 96, 192, 384]))
