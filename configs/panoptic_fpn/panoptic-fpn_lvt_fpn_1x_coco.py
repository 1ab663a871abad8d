# LVT's published Panoptic FPN 1x setup (configs/_base_/models/panoptic_fpn_lvt.py): AdamW lr
# 4e-4, weight decay 1e-4, no gradient clipping, 12 epochs with steps at 8 and 11, linear
# warm-up 500 iterations, 8 GPUs x 8 images (64), single scale (1333, 800).
# Published (LVT README, most likely the ms-3x model): PQ 42.8 / PQ_th 49.5 / PQ_st 32.6 on COCO
# val, 5.4 M parameters, 56.4 GFLOPs.
_base_ = ['../_base_/models/panoptic_fpn_lvt.py', '../_base_/datasets/coco_panoptic.py',
          '../_base_/schedules/schedule_1x.py', '../_base_/det_runtime.py']
optim_wrapper = dict(optimizer=dict(lr=4e-4, weight_decay=1e-4))
train_dataloader = dict(batch_size=8, num_workers=8)
auto_scale_lr = dict(base_batch_size=64)
