# 3x schedule (36 epochs, lr x0.1 after epochs 24 and 33), to be used with multi-scale training
# (shorter side 640-800): the 1x schedule's optimizer and warm-up over three times the epochs.
_base_ = './schedule_1x.py'
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=36, by_epoch=True, milestones=[24, 33], gamma=0.1),
]
train_cfg = dict(max_epochs=36, val_interval=3)
