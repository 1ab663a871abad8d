"""DeiT-style knowledge distillation from a frozen teacher (https://arxiv.org/abs/2012.12877)."""
from typing import List, Optional, Union

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.runner.checkpoint import CheckpointLoader
from mmpretrain.structures import DataSample
from torch import nn

from ...registry import MODELS
from ..checkpoint import unwrap_state_dict
from .image import ImageClassifier


def build_teacher(teacher: Union[dict, str, nn.Module], checkpoint: Optional[str] = None) -> nn.Module:
    """A frozen teacher in eval mode, from a model config dict, a config file or a module.

    With ``checkpoint`` its weights load strictly from that file (official/timm layouts of the
    vitzoo families convert on the way); without, a teacher built from a config runs its own
    ``init_weights`` (so an ``init_cfg`` of type ``Pretrained`` in the teacher config works).
    """
    if isinstance(teacher, str):
        teacher = Config.fromfile(teacher)['model']
    if not isinstance(teacher, nn.Module):
        teacher = MODELS.build(teacher)
    if checkpoint is not None:
        state_dict = unwrap_state_dict(CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu'))
        teacher.load_state_dict(state_dict, strict=True)
        print_log(f'distillation teacher {type(teacher).__name__}: loaded {checkpoint}', logger='current')
    elif isinstance(teacher, BaseModule):
        teacher.init_weights()
    for param in teacher.parameters():
        param.requires_grad = False
    return teacher.eval()


@MODELS.register_module()
class DistillationClassifier(ImageClassifier):
    """:class:`ImageClassifier` trained with DeiT-style distillation from a frozen teacher.

    In training the teacher sees the same (normalised, Mixup/CutMix-mixed) batch as the student
    and its logits go to the head's ``loss`` as ``teacher_logits``; the head defines the
    distillation loss (:class:`~vitzoo.models.DistilledLinearClsHead`: hard, soft or none).
    Prediction uses the student only.

    The teacher is not part of the classifier's ``state_dict``: checkpoints hold the student alone
    and load into this class or a plain :class:`ImageClassifier` alike.

    Args:
        teacher: the teacher: a model config (e.g. ``dict(type='mmpretrain.TimmClassifier',
            model_name='regnety_160')`` or any vitzoo/mmpretrain classifier), a config file whose
            ``model`` is the teacher, or a built module. Called as ``teacher(inputs)`` it must
            return logits over the student's classes and take the student's normalised inputs.
        teacher_checkpoint: weights of the teacher (path or URL).
        *args, **kwargs: those of :class:`ImageClassifier` (``backbone``, ``neck``, ``head``,
            ``train_cfg``, ``data_preprocessor``, ``init_cfg``).
    """

    def __init__(self,
                 *args,
                 teacher: Union[dict, str, nn.Module],
                 teacher_checkpoint: Optional[str] = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = build_teacher(teacher, teacher_checkpoint)
        self._register_state_dict_hook(_drop_teacher_keys)
        self.register_load_state_dict_pre_hook(_keep_teacher_weights)

    def init_weights(self) -> None:
        """Initialise the student; the teacher keeps the weights it was built with."""
        teacher = self._modules.pop('teacher')
        try:
            super().init_weights()
        finally:
            self._modules['teacher'] = teacher

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    def loss(self, inputs: torch.Tensor, data_samples: List[DataSample]) -> dict:
        feats = self.extract_feat(inputs)
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        return self.head.loss(feats, data_samples, teacher_logits=teacher_logits)


def _drop_teacher_keys(module, state_dict, prefix, local_metadata) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + 'teacher.')]:
        del state_dict[key]


def _keep_teacher_weights(module, state_dict, prefix, *args) -> None:
    """Student checkpoints carry no teacher: fill its keys with its current weights."""
    for key, value in module.teacher.state_dict().items():
        state_dict.setdefault(f'{prefix}teacher.{key}', value)
