# PiT-S with the DeiT recipe behind the released PiT weights ("+DeiT" in the PiT README;
# facebookresearch/deit main.py defaults): AdamW lr 5e-4 * batch / 512 (1e-3 at 8 x 128), eps 1e-8,
# weight decay 0.05 (none on norms, biases, position embedding and class tokens), 5 warm-up epochs
# from 1e-6, cosine to 1e-5 over 300 epochs, RandAugment m9-mstd0.5 (increasing), Mixup 0.8 /
# CutMix 1.0 (one per batch), label smoothing 0.1, RandomErasing 0.25, repeated augmentation
# (3 repeats), drop path 0.1, no gradient clipping. DeiT keeps an EMA of the weights but evaluates
# and releases the raw model, so no EMA hook here. Evaluation as timm's for PiT: bicubic resize
# of the short edge to 248 (crop ratio 0.9), centre crop 224.
_base_ = [
    '../_base_/models/pit-s.py',
    '../_base_/datasets/imagenet_bs64_swin_224.py',
    '../_base_/schedules/imagenet_bs1024_adamw.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=128, sampler=dict(type='RepeatAugSampler', num_repeats=3))
test_pipeline = [dict(step, scale=248) if step['type'] == 'ResizeEdge' else step for step in _base_.test_pipeline]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        '.pos_embed': dict(decay_mult=0.0),
        '.cls_token': dict(decay_mult=0.0),
    }))
