_base_ = './panoptic-fpn_twins-pcpvt-b_fpn_1x_coco.py'
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/twins/twins-pcpvt-large_3rdparty_16xb64_in1k_20220126-c1ef8d80.pth'  # noqa: E501
model = dict(backbone=dict(arch='large', init_cfg=dict(checkpoint=checkpoint)))
