_base_ = './pit-s_8xb128_in1k.py'
model = dict(backbone=dict(arch='ti'), head=dict(in_channels=256))
