# Dense demo: LVT's Panoptic FPN trained from scratch on the toy scenes of
# tools/dataset_converters/toy_dense_dataset.py (data/toy_dense, COCO-panoptic layout: 3 thing
# and 3 stuff classes, 128x96 images) on one CPU. The model is the published setup's; images
# are upscaled 2x (as COCO's are to 1333x800) so that the objects meet the 32-pixel anchors, and
# the stuff area limit of the fusion is scaled down with the image area (4096 px is ~0.4% of a
# COCO image; 48 px is as much of a 128x96 one). With at most four objects per image, fewer
# proposals and RoI samples suffice (and keep CPU training fast). From-scratch training needs a
# higher lr.
#   python tools/dataset_converters/toy_dense_dataset.py data/toy_dense
#   python tools/train.py configs/panoptic_fpn/panoptic-fpn_lvt_fpn_1xb4-toy_coco.py
_base_ = './panoptic-fpn_lvt_fpn_1x_coco.py'
data_root = 'data/toy_dense/coco/'
thing_classes = ('person', 'car', 'sports ball')  # real COCO names and ids (see the json)
stuff_classes = ('road', 'sky-other-merged', 'grass-merged')
metainfo = dict(classes=thing_classes + stuff_classes, thing_classes=thing_classes, stuff_classes=stuff_classes)
num_things, num_stuff = len(thing_classes), len(stuff_classes)
max_epochs = 12
model = dict(
    backbone=dict(init_cfg=None),
    roi_head=dict(bbox_head=dict(num_classes=num_things), mask_head=dict(num_classes=num_things)),
    semantic_head=dict(num_things_classes=num_things, num_stuff_classes=num_stuff),
    train_cfg=dict(rpn_proposal=dict(max_per_img=300), rcnn=dict(sampler=dict(num=128))),
    panoptic_fusion_head=dict(num_things_classes=num_things, num_stuff_classes=num_stuff),
    test_cfg=dict(panoptic=dict(stuff_area_limit=48)))
scale = (256, 192)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadPanopticAnnotations'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadPanopticAnnotations'),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/panoptic_val2017.json',
                     seg_prefix=data_root + 'annotations/panoptic_val2017/', nproc=1)
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[9, 11], gamma=0.1),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=8), checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
