# SegFormer's all-MLP decoder (mmseg 1.x SegformerHead: a 1x1 conv to `channels` per level, all
# levels resized to stride 4, concatenated, fused by a 1x1 conv) over the four maps (strides
# 4/8/16/32) of a vitzoo backbone. The configs in configs/segformer/ add model.backbone and set
# decode_head.in_channels (the backbone's widths) and channels (the head's embedding width).
# SyncBN as published; tools/train.py and tools/test.py run it as BN on CPU or in one process.
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(512, 512))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    decode_head=dict(
        type='SegformerHead',
        in_index=[0, 1, 2, 3],
        channels=256,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
