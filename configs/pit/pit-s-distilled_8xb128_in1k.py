# PiT-S distilled ("+Distill" in the PiT README): the PiT-S recipe plus DeiT's hard distillation
# through a distillation token: loss = 0.5 * label-smoothed CE(class head, labels)
# + 0.5 * CE(distillation head, argmax of the teacher), teacher and student seeing the same mixed
# batch; prediction averages the two heads. The teacher is DeiT's RegNetY-16GF with the weights
# DeiT published, run by mmpretrain's TimmClassifier (needs timm). The PiT authors state only
# that they used DeiT's distillation; the teacher follows DeiT. It is built, and its 300 MB weights
# fetched, at the first training iteration: building this config, testing, inference and FLOPs
# counting never touch it.
_base_ = './pit-s_8xb128_in1k.py'
model = dict(
    type='vitzoo.DistillationClassifier',
    backbone=dict(distilled=True),
    head=dict(type='vitzoo.DistilledLinearClsHead', distill_type='hard', distill_alpha=0.5),
    teacher=dict(type='mmpretrain.TimmClassifier', model_name='regnety_160', num_classes=1000),
    teacher_checkpoint='https://dl.fbaipublicfiles.com/deit/regnety_160-a5fe301d.pth',
)
