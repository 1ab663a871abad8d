"""LVT's ImageNet classifier with MixToken (https://arxiv.org/abs/2112.10809)."""
from typing import List, Optional, Union

import torch
from mmpretrain.structures import DataSample

from ...registry import MODELS
from ..backbones.lvt import sample_token_box
from .image import ImageClassifier


@MODELS.register_module()
class LVTClassifier(ImageClassifier):
    """:class:`~vitzoo.models.backbones.LVT` + :class:`~vitzoo.models.heads.LVTClsHead`.

    Loads the official ImageNet checkpoint (``lvt_imagenet.pth.tar``) as it is, converted on load.

    Args:
        backbone: the LVT config; its last ``out_indices`` entry must be the last stage when
            MixToken is on.
        head: the :class:`LVTClsHead` config.
        train_cfg: ``mix_token=dict(beta=1.0)`` (or ``True``) turns MixToken on: each training
            batch swaps one box of the stage-1 tokens, aligned to the last stage's grid and
            sized by ``lam ~ Beta(beta, beta)``, with the batch-flipped sample, and the head
            mixes its targets accordingly. The other keys (``augments``, ``probs``) are
            mmpretrain's batch augmentations.
        data_preprocessor, init_cfg, pretrained: as mmpretrain's ``ImageClassifier``.
    """

    def __init__(self,
                 backbone: dict,
                 head: dict,
                 train_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 pretrained: Optional[str] = None):
        train_cfg = dict(train_cfg or {})
        mix_token: Union[bool, dict, None] = train_cfg.pop('mix_token', None)
        super().__init__(backbone=backbone, head=head, pretrained=pretrained, train_cfg=train_cfg or None,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if mix_token is True:
            mix_token = {}
        if mix_token:
            if set(mix_token) - {'beta'}:
                raise ValueError(f'mix_token takes only beta, got {sorted(mix_token)}')
            if self.backbone.out_indices[-1] != len(self.backbone.stages) - 1:
                raise ValueError('MixToken needs the last backbone stage among out_indices, got '
                                 f'{self.backbone.out_indices}')
        self.mix_token = dict(mix_token) if mix_token else None

    def loss(self, inputs: torch.Tensor, data_samples: List[DataSample]) -> dict:
        if self.mix_token is None:
            return super().loss(inputs, data_samples)
        grid = self.backbone.out_sizes(inputs.shape[2], inputs.shape[3])[-1]
        box = sample_token_box(grid, **self.mix_token)
        feats = self.backbone(inputs, mix_box=box)
        return self.head.loss(feats, data_samples, mix_box=box)
