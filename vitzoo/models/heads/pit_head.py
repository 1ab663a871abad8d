"""Classification head for distilled PiT (and any backbone with class and distillation tokens).

DeiT-style distillation (https://arxiv.org/abs/2012.12877), as used for the distilled PiT models
(https://arxiv.org/abs/2103.16302).
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmpretrain.models.heads import ClsHead
from mmpretrain.structures import DataSample
from torch import nn

from ...registry import MODELS


@MODELS.register_module()
class DistilledLinearClsHead(ClsHead):
    """Linear classifiers on the class token (``fc``) and the distillation token (``fc_dist``).

    Predictions (``predict`` and ``forward``) are the average of the two logits. In training the
    class logits take the classification loss and the distillation logits learn from a teacher's
    logits, which :class:`~vitzoo.models.DistillationClassifier` passes to :meth:`loss`:

    * ``'hard'``: cross-entropy with the teacher's argmax;
    * ``'soft'``: KL divergence to the teacher's distribution at temperature ``distill_tau``
      (scaled by ``tau ** 2``);
    * ``'none'``: no teacher; the distillation head gets no loss.

    With a teacher the losses are ``loss_cls = (1 - alpha) * classification`` and
    ``loss_distill = alpha * distillation`` (DeiT: hard, ``alpha = 0.5``).

    Args:
        num_classes: number of categories.
        in_channels: width of the tokens.
        distill_type: ``'hard'``, ``'soft'`` or ``'none'``.
        distill_alpha: weight of the distillation loss.
        distill_tau: temperature of the soft distillation.
        init_cfg: initialisation of the linear layers (default: PyTorch's, as the official PiT).
        **kwargs: the other arguments of mmpretrain's ``ClsHead`` (``loss``, ``topk``, ``cal_acc``).
    """
    distill_types = ('hard', 'soft', 'none')

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 distill_type: str = 'hard',
                 distill_alpha: float = 0.5,
                 distill_tau: float = 1.0,
                 init_cfg: Optional[dict] = None,
                 **kwargs):
        super().__init__(init_cfg=init_cfg, **kwargs)
        if distill_type not in self.distill_types:
            raise ValueError(f'distill_type must be one of {self.distill_types}, got {distill_type!r}')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.distill_type = distill_type
        self.distill_alpha = distill_alpha
        self.distill_tau = distill_tau
        self.fc = nn.Linear(in_channels, num_classes)
        self.fc_dist = nn.Linear(in_channels, num_classes)

    def pre_logits(self, feats: Tuple) -> Tuple[torch.Tensor, torch.Tensor]:
        """The ``(class token, distillation token)`` pair of the last output."""
        cls_token, dist_token = feats[-1]
        return cls_token, dist_token

    def forward_logits(self, feats: Tuple) -> Tuple[torch.Tensor, torch.Tensor]:
        """Logits of the class head and of the distillation head."""
        cls_token, dist_token = self.pre_logits(feats)
        return self.fc(cls_token), self.fc_dist(dist_token)

    def forward(self, feats: Tuple) -> torch.Tensor:
        logits, logits_dist = self.forward_logits(feats)
        return (logits + logits_dist) / 2

    def distill_loss(self, logits_dist: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        teacher_logits = teacher_logits.detach().float()
        logits_dist = logits_dist.float()
        if self.distill_type == 'hard':
            return F.cross_entropy(logits_dist, teacher_logits.argmax(dim=1))
        tau = self.distill_tau
        kl = F.kl_div(F.log_softmax(logits_dist / tau, dim=1), F.log_softmax(teacher_logits / tau, dim=1),
                      reduction='sum', log_target=True)
        return kl * tau * tau / logits_dist.numel()

    def loss(self,
             feats: Tuple,
             data_samples: List[DataSample],
             teacher_logits: Optional[torch.Tensor] = None,
             **kwargs) -> dict:
        logits, logits_dist = self.forward_logits(feats)
        losses = self._get_loss(logits, data_samples, **kwargs)
        if self.distill_type == 'none':
            return losses
        if teacher_logits is None:
            raise RuntimeError(f"DistilledLinearClsHead with distill_type={self.distill_type!r} needs a "
                               "teacher: train it inside vitzoo.DistillationClassifier (or set distill_type='none')")
        losses['loss_cls'] = (1 - self.distill_alpha) * losses.pop('loss')
        losses['loss_distill'] = self.distill_alpha * self.distill_loss(logits_dist, teacher_logits)
        return losses
