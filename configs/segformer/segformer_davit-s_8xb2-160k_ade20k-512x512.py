_base_ = './segformer_davit-t_8xb2-160k_ade20k-512x512.py'
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/davit/davit-small_3rdparty_in1k_20221116-51a849a6.pth'  # noqa: E501
model = dict(backbone=dict(arch='small', init_cfg=dict(checkpoint=checkpoint)))
