# LVT's Panoptic FPN (Chenglin-Yang/LVT, detection/configs/lvt/panoptic_fpn_lvt_fpn_*_coco.py):
# the LVT backbone (four stage maps, no output norms) and narrow heads: FPN and RPN 96 channels,
# box head fc 160, mask head 96, semantic head inner 48 with GN(12). The original's
# PanopticFPNHead(num_upsample=[0, 1, 2, 3]) is mmdet 3.x's built-in behaviour: level i (stride
# 4 * 2^i) passes max(i, 1) 3x3 conv + GN + ReLU layers and is upsampled 2x after each of the
# first i of them (tests/test_dense.py checks the layer counts).
# Checkpoint: the official ImageNet weights (lvt_imagenet_pretrained.pth.tar, the backbone-only
# file of the LVT README, or lvt_imagenet.pth.tar) load as they are (converted on load), or
# convert them once with tools/model_converters/lvt2vitzoo.py.
_base_ = './panoptic_fpn.py'
checkpoint = 'checkpoints/lvt_imagenet_pretrained.pth.tar'
model = dict(
    backbone=dict(type='vitzoo.LVT', init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=dict(in_channels=[64, 64, 160, 256], out_channels=96),
    rpn_head=dict(in_channels=96, feat_channels=96),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=96),
        bbox_head=dict(in_channels=96, fc_out_channels=160),
        mask_roi_extractor=dict(out_channels=96),
        mask_head=dict(in_channels=96, conv_out_channels=96)),
    semantic_head=dict(in_channels=96, inner_channels=48,
                       norm_cfg=dict(type='GN', num_groups=12, requires_grad=True)))
