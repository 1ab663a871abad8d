# Dense demo: SegFormer-LVT trained from scratch on the toy scenes of
# tools/dataset_converters/toy_dense_dataset.py (data/toy_dense, ADE20K layout: 6 classes,
# 128x96 images) on one CPU, with 64x64 crops. The model and data pipeline are the published
# setup's, scaled down; from-scratch training needs a higher lr and a shorter warm-up.
#   python tools/dataset_converters/toy_dense_dataset.py data/toy_dense
#   python tools/train.py configs/segformer/segformer_lvt_1xb8-1k_toy-64x64.py
_base_ = './segformer_lvt_8xb2-160k_ade20k-512x512.py'
data_root = 'data/toy_dense/ade/ADEChallengeData2016'
metainfo = dict(classes=('person', 'car', 'ball', 'road', 'sky', 'grass'))  # real ADE20K names
crop_size = (64, 64)
max_iters = 1000
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=None),
    decode_head=dict(num_classes=len(metainfo['classes'])))
# The base pipelines at the toy scale: resize around 384x96, 64x64 crops, no test-time resize.
train_pipeline = [
    dict(step, scale=(384, 96)) if step['type'] == 'RandomResize' else
    dict(step, crop_size=crop_size) if step['type'] == 'RandomCrop' else step
    for step in _base_.train_pipeline
]
test_pipeline = [step for step in _base_.test_pipeline if step['type'] != 'Resize']
train_dataloader = dict(batch_size=8, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=50, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
