# 1x schedule for transformer backbones: 12 epochs, lr x0.1 after epochs 8 and 11, linear
# warm-up over 500 iterations from 1e-3 x lr; AdamW lr 1e-4, weight decay 0.05 (the usual
# choice for Twins, DaViT and Swin-like backbones in detection, instead of mmdet's SGD 0.02);
# batch 16 (8 GPUs x 2).
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                                                         weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=12, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
auto_scale_lr = dict(enable=False, base_batch_size=16)
