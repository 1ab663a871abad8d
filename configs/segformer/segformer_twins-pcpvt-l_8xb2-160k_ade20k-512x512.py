_base_ = './segformer_twins-pcpvt-b_8xb2-160k_ade20k-512x512.py'
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/twins/twins-pcpvt-large_3rdparty_16xb64_in1k_20220126-c1ef8d80.pth'  # noqa: E501
model = dict(backbone=dict(arch='large', init_cfg=dict(checkpoint=checkpoint)))
