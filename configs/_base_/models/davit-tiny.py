# DaViT-tiny classifier: backbone -> global average pooling -> LayerNorm -> linear head (the
# official head order; the backbone's outputs carry no norm).
model = dict(
    type='vitzoo.ImageClassifier',
    backbone=dict(
        type='vitzoo.DaViT',
        arch='tiny',
        out_indices=(3, ),
        norm_after_stage=False,
        drop_path_rate=0.1,
    ),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='vitzoo.NormLinearClsHead',
        num_classes=1000,
        in_channels=768,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02),
    ),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)
