# LVT (https://arxiv.org/abs/2112.10809), the published ImageNet model: the LVT backbone, two
# class-attention blocks, a class head and a token head (inference: head(cls) + 0.5 * max over
# tokens of aux_head(tokens)), trained with token labeling.
# Recipe (official README command and classification/main.py defaults, run with apex AMP: use
# --amp): 8 GPUs x 128 images, AdamW lr 1.6e-3 as given for the total batch of 1024, eps 1e-8,
# weight decay 0.05 (none on norms, biases and the class token), 20 warm-up epochs from 1e-6,
# cosine to 1e-5 over 300 epochs, then 10 cool-down epochs at 1e-5 (310 in all), no gradient
# clipping, no EMA, RandAugment m9-mstd0.5 (increasing), RandomErasing 0.25, label smoothing
# 0.1, no Mixup/CutMix (MixToken inside the model is the mixing), class/token loss weights
# 1.0/0.5. Drop path 0.1 as the README asks (the official code silently ignores it).
# Differences: the official crops use a random bilinear/bicubic interpolation (bicubic here);
# timm's cosine counts the warm-up epochs in its period, mmengine's starts after them.
# Token labels: the paper trains the token loss on dense score maps of an NFNet teacher (the
# TokenLabeling project's label_top5_train_nfnet files). This config as is uses each image's own
# label for all its tokens. To use teacher maps, add a transform after the flip that loads the
# image's map, applies the same crop and flip, and stores it as `gt_dense_score`
# (num_classes x h x w, probabilities), and pack it with
# dict(type='PackInputs', algorithm_keys=('gt_dense_score', )); the head pools it to the token
# grid (7 x 7 at 224).
# Evaluation as the official validate.py (crop_pct 0.96): bicubic resize of the short edge to
# floor(224 / 0.96) = 233, centre crop 224.
_base_ = [
    '../_base_/datasets/imagenet_bs64_swin_224.py',
    '../_base_/schedules/imagenet_bs1024_adamw.py',
    '../_base_/default_runtime.py',
]
model = dict(
    type='vitzoo.LVTClassifier',
    backbone=dict(type='vitzoo.LVT', arch='lvt', out_indices=(3, ), drop_path_rate=0.1),
    head=dict(
        type='vitzoo.LVTClsHead',
        num_classes=1000,
        in_channels=256,
        num_cls_blocks=2,
        num_heads=8,
        mlp_ratio=4,
        aux_weight=0.5,
        cls_weight=1.0,
        dense_weight=0.5,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
    ),
    # MixToken: one box per batch on the 7 x 7 token grid, lam ~ Beta(1, 1).
    train_cfg=dict(mix_token=dict(beta=1.0)),
)

train_dataloader = dict(batch_size=128)
test_pipeline = [dict(step, scale=233) if step['type'] == 'ResizeEdge' else step for step in _base_.test_pipeline]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

lr = 1.6e-3
warmup_epochs = 20
cosine_epochs = 300
optim_wrapper = dict(
    optimizer=dict(lr=lr),
    paramwise_cfg=dict(custom_keys={'.cls_token': dict(decay_mult=0.0)}),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / lr, by_epoch=True, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=warmup_epochs, end=cosine_epochs,
         T_max=cosine_epochs - warmup_epochs),
]
train_cfg = dict(by_epoch=True, max_epochs=cosine_epochs + 10, val_interval=1)
