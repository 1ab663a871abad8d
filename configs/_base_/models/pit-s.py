# PiT-S classifier: backbone -> LayerNorm on the class token -> linear head (PyTorch's default
# initialisation of the head, as the official model).
model = dict(
    type='vitzoo.ImageClassifier',
    backbone=dict(type='vitzoo.PiT', arch='s', out_type='cls_token', drop_path_rate=0.1),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=576,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=None,
    ),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)
