# The Twins recipe (see twins-pcpvt-base_8xb128_in1k.py) with the SVT-base backbone.
_base_ = './twins-pcpvt-base_8xb128_in1k.py'
model = dict(backbone=dict(type='vitzoo.SVT'), head=dict(in_channels=768))
