"""DeiT-style knowledge distillation from a frozen teacher (https://arxiv.org/abs/2012.12877)."""
import os
from typing import List, Optional, Union

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmpretrain.structures import DataSample
from torch import nn

from ...registry import MODELS
from ...utils.download import resolve_checkpoint
from ..checkpoint import load_checkpoint_to_model
from .image import ImageClassifier

TeacherSpec = Union[dict, str, os.PathLike, nn.Module]


def build_teacher(teacher: TeacherSpec, checkpoint: Optional[str] = None) -> nn.Module:
    """A frozen teacher in eval mode, from a model config dict, a config file or a module.

    With ``checkpoint`` its weights load strictly from that file (official/timm layouts of the
    vitzoo families convert on the way); without, a teacher built from a config runs its own
    ``init_weights`` (so an ``init_cfg`` of type ``Pretrained`` in the teacher config works) and a
    built module is used as it is.
    """
    if checkpoint is not None:
        checkpoint = resolve_checkpoint(checkpoint)  # downloaded (or refused) before building the teacher
    if isinstance(teacher, (str, os.PathLike)):
        teacher = Config.fromfile(os.fspath(teacher))['model']
    from_config = not isinstance(teacher, nn.Module)
    if from_config:
        teacher = MODELS.build(teacher)
    if checkpoint is not None:
        load_checkpoint_to_model(teacher, checkpoint, strict=True)
        print_log(f'distillation teacher {type(teacher).__name__}: loaded {checkpoint}', logger='current')
    elif from_config and isinstance(teacher, BaseModule):
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

    The teacher is built, and its checkpoint fetched and loaded, at its first use (the first
    training ``loss``): building the classifier, testing, inference and FLOPs counting never touch
    it. Its construction does not draw from the random generators, so the student's training
    stream is the same whenever it happens (a resumed run builds it again).

    The teacher is held outside the module tree, as DeiT holds it: it follows the classifier's
    device and dtype (``to``, ``cuda``, ``half``), but it is no submodule, so it stays out of
    ``state_dict`` (checkpoints hold the student alone and load into this class or a plain
    :class:`ImageClassifier` alike), of ``parameters()`` (optimizer, DDP) and of ``init_weights``,
    ``train()`` and SyncBN conversion.

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
                 teacher: TeacherSpec,
                 teacher_checkpoint: Optional[str] = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(teacher, (dict, str, os.PathLike, nn.Module)):
            raise TypeError('teacher must be a model config dict, a config file or a module, '
                            f'got {type(teacher).__name__}')
        self._teacher_spec = (teacher, teacher_checkpoint)  # a tuple keeps a module out of the tree
        self._teacher = ()

    @property
    def teacher_built(self) -> bool:
        return bool(self._teacher)

    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher, built on first access on the classifier's device and dtype."""
        if not self._teacher:
            devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
            with torch.random.fork_rng(devices=devices):
                teacher = build_teacher(*self._teacher_spec)
            reference = next(self.parameters(), None)
            if reference is not None:
                teacher.to(device=reference.device, dtype=reference.dtype)
            self._teacher = (teacher, )
        return self._teacher[0]

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self._teacher:
            self._teacher[0]._apply(fn, *args, **kwargs)
        return self

    def extra_repr(self) -> str:
        if self._teacher:
            return f'teacher={type(self.teacher).__name__} (frozen, outside the state dict)'
        spec = self._teacher_spec[0]
        name = spec.get('type') if isinstance(spec, dict) else type(spec).__name__ if isinstance(spec, nn.Module) \
            else os.fspath(spec)
        return f'teacher={name} (built at the first training loss, outside the state dict)'

    def loss(self, inputs: torch.Tensor, data_samples: List[DataSample]) -> dict:
        feats = self.extract_feat(inputs)
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        return self.head.loss(feats, data_samples, teacher_logits=teacher_logits)
