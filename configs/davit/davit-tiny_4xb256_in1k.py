# DaViT recipe (official README and train.py): AdamW lr 1e-3 for a total batch of 1024, weight
# decay 0.05, 300 epochs, 5 warm-up epochs, grad clip 1.0, label smoothing 0.1, Mixup 0.8 /
# CutMix 1.0, RandAugment m9, RandomErasing 0.25; drop path 0.1 / 0.2 / 0.4 for T / S / B (as
# mmpretrain's DaViT configs).
# Evaluation as timm's re-evaluation of the official weights (crop_pct 0.95): bicubic resize of
# the short edge to floor(224 / 0.95) = 235, then a 224 centre crop.
_base_ = [
    '../_base_/models/davit-tiny.py',
    '../_base_/datasets/imagenet_bs64_swin_224.py',
    '../_base_/schedules/imagenet_bs1024_adamw.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=256)
test_pipeline = [dict(step, scale=235) if step['type'] == 'ResizeEdge' else step for step in _base_.test_pipeline]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(clip_grad=dict(max_norm=1.0))
