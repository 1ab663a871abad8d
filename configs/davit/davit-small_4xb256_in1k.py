_base_ = './davit-tiny_4xb256_in1k.py'
model = dict(backbone=dict(arch='small', drop_path_rate=0.2))
