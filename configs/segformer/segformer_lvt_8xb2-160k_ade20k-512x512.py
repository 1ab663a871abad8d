# LVT's published ADE20K setup (Chenglin-Yang/LVT, segformer.lvt.512x512.ade.160k.py): SegFormer
# head with embedding width 256 (the original head's decoder_params.embed_dim; mmseg 1.x's
# SegformerHead calls it `channels`), dropout 0.1, SyncBN; AdamW lr 6e-5, weight decay 0.01 (none
# on norms and pos_block), head lr x10, linear warm-up 1500 iterations, poly to 0 at 160k, batch
# 16 (8 GPUs x 2), 512x512 crops; checkpoints every 4k, mIoU every 16k iterations. The backbone
# returns its four stage maps without norms (as the official dense backbone); no drop path.
# Published: 39.3 mIoU (single scale), 3.9 M parameters, 10.6 GFLOPs (512x512).
# Differences: mmseg 1.x's head puts BN + ReLU after each level's 1x1 projection and concatenates
# the levels fine-to-coarse (the original: plain linear projections, coarse-to-fine); the
# original test pipeline resized images to multiples of 32 (AlignedResize, SegFormer's fork),
# here they are resized to (2048, 512) keeping the ratio, as mmseg's ADE20K configs do.
# Checkpoint: the official ImageNet weights (lvt_imagenet_pretrained.pth.tar, the backbone-only
# file of the LVT README, or the classifier lvt_imagenet.pth.tar) load as they are (converted on
# load), or convert them once with tools/model_converters/lvt2vitzoo.py.
_base_ = ['../_base_/models/segformer.py', '../_base_/datasets/ade20k.py',
          '../_base_/schedules/schedule_160k.py', '../_base_/seg_runtime.py']
checkpoint = 'checkpoints/lvt_imagenet_pretrained.pth.tar'
model = dict(
    backbone=dict(type='vitzoo.LVT', init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    decode_head=dict(in_channels=[64, 64, 160, 256], channels=256))
default_hooks = dict(checkpoint=dict(interval=4000))
