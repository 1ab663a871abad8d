"""Classification head that normalises the pooled features before the linear classifier."""
from typing import Optional, Tuple

import torch
from mmpretrain.models.heads import LinearClsHead
from torch import nn

from ...registry import MODELS


@MODELS.register_module()
class NormLinearClsHead(LinearClsHead):
    """``LayerNorm -> Linear`` on pooled features (DaViT's and ConvNeXt's head order).

    Use it after a pooling neck: the norm sees the pooled vector, not the tokens.

    Args:
        num_classes: number of categories.
        in_channels: width of the pooled features.
        norm_eps: epsilon of the LayerNorm.
        init_cfg: initialisation of the linear layer.
        **kwargs: the other arguments of mmpretrain's ``ClsHead`` (``loss``, ``topk``, ``cal_acc``).
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 norm_eps: float = 1e-5,
                 init_cfg: Optional[dict] = dict(type='TruncNormal', layer='Linear', std=0.02),
                 **kwargs):
        super().__init__(num_classes=num_classes, in_channels=in_channels, init_cfg=init_cfg, **kwargs)
        self.norm = nn.LayerNorm(in_channels, eps=norm_eps)

    def pre_logits(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        return self.norm(feats[-1])
