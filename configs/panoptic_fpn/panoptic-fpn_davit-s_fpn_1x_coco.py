_base_ = './panoptic-fpn_davit-t_fpn_1x_coco.py'
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/davit/davit-small_3rdparty_in1k_20221116-51a849a6.pth'  # noqa: E501
model = dict(backbone=dict(arch='small', drop_path_rate=0.2, init_cfg=dict(checkpoint=checkpoint)))
