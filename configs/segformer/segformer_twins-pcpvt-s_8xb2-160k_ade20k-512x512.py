# SegFormer head on Twins-PCPVT-S, ADE20K 512x512, 160k iterations, batch 16 (8 GPUs x 2) with
# SegFormer's schedule (configs/_base_/schedules/schedule_160k.py). Head embedding width 768, as
# SegFormer uses for backbones of this size (256 for the light ones: LVT, PiT-Ti/XS); drop path
# 0.2 (0.3 for B/L) as mmseg's Twins ADE20K configs. The backbone returns its four stage maps
# without output norms (official dense code) and starts from mmpretrain's ImageNet classifier;
# official, timm and mmpretrain Twins checkpoints all load (converted on load).
_base_ = ['../_base_/models/segformer.py', '../_base_/datasets/ade20k.py',
          '../_base_/schedules/schedule_160k.py', '../_base_/seg_runtime.py']
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/twins/twins-pcpvt-small_3rdparty_8xb128_in1k_20220126-ef23c132.pth'  # noqa: E501
model = dict(
    backbone=dict(type='vitzoo.PCPVT', arch='small', drop_path_rate=0.2,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    decode_head=dict(in_channels=[64, 128, 320, 512], channels=768))
