# SegFormer head (embedding width 768) on DaViT-T, ADE20K 512x512, 160k iterations, batch 16,
# SegFormer's schedule. A LayerNorm on every output and drop path 0.3, as the official DaViT
# ADE20K configs; starts from mmpretrain's ImageNet classifier (converted on load).
_base_ = ['../_base_/models/segformer.py', '../_base_/datasets/ade20k.py',
          '../_base_/schedules/schedule_160k.py', '../_base_/seg_runtime.py']
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/davit/davit-tiny_3rdparty_in1k_20221116-700fdf7d.pth'  # noqa: E501
model = dict(
    backbone=dict(type='vitzoo.DaViT', arch='tiny', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    decode_head=dict(in_channels=[96, 192, 384, 768], channels=768))
