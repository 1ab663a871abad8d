_base_ = './panoptic-fpn_twins-pcpvt-s_fpn_1x_coco.py'
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/twins/twins-pcpvt-base_3rdparty_8xb128_in1k_20220126-f8c4b0d5.pth'  # noqa: E501
model = dict(backbone=dict(arch='base', drop_path_rate=0.2, init_cfg=dict(checkpoint=checkpoint)))
