# SegFormer head (embedding width 768; 256 for PiT-Ti/XS) on PiT-S, ADE20K 512x512, 160k
# iterations, batch 16, SegFormer's schedule. PiT has three stages at strides ~8/16/32;
# out_type='pyramid' resamples them to exact strides 8/16/32 and adds a learned stride-4 level
# (channels C, C, 2C, 4C; see vitzoo/models/backbones/pit.py). No reference dense setup exists
# for PiT; drop path 0.1.
# Checkpoint: the official ImageNet weights (github.com/naver-ai/pit: pit_{ti_730,xs_781,s_809,
# b_820}.pth, pit_*_distill_*.pth) or timm's pit_* weights saved under checkpoints/; they load as
# they are (converted on load), or convert them once with tools/model_converters/pit2vitzoo.py.
_base_ = ['../_base_/models/segformer.py', '../_base_/datasets/ade20k.py',
          '../_base_/schedules/schedule_160k.py', '../_base_/seg_runtime.py']
checkpoint = 'checkpoints/pit_s_809.pth'
model = dict(
    backbone=dict(type='vitzoo.PiT', arch='s', out_type='pyramid', drop_path_rate=0.1,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    decode_head=dict(in_channels=[144, 144, 288, 576], channels=768))
