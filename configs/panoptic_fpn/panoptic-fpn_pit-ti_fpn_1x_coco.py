_base_ = './panoptic-fpn_pit-s_fpn_1x_coco.py'
checkpoint = 'checkpoints/pit_ti_730.pth'
model = dict(
    backbone=dict(arch='ti', init_cfg=dict(checkpoint=checkpoint)),
    neck=dict(in_channels=[64, 64, 128, 256]))
