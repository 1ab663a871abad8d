# Twins recipe (official main.py): AdamW lr 5e-4 * batch / 512, wd 0.05, 300 epochs, 5 warm-up
# epochs, grad clip 5.0, label smoothing 0.1, Mixup 0.8 / CutMix 1.0, RandAugment m9,
# RandomErasing 0.25, drop path 0.3 (as mmpretrain's Twins configs); eval resize 256 -> crop 224.
_base_ = [
    '../_base_/models/twins_pcpvt-base.py',
    '../_base_/datasets/imagenet_bs64_swin_224.py',
    '../_base_/schedules/imagenet_bs1024_adamw.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=128)
optim_wrapper = dict(clip_grad=dict(max_norm=5.0))
