# Twins-PCPVT-base classifier: backbone -> LayerNorm on the last stage -> GAP -> linear head.
model = dict(
    type='vitzoo.ImageClassifier',
    backbone=dict(
        type='vitzoo.PCPVT',
        arch='base',
        out_indices=(3, ),
        norm_after_stage=(False, False, False, True),
        drop_path_rate=0.3,
    ),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02),
    ),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)
