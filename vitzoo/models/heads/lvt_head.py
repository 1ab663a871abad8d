"""LVT's ImageNet head: class attention over the last stage's tokens, with token labeling.

"Lite Vision Transformer with Enhanced Self-Attention", https://arxiv.org/abs/2112.10809; the head
follows the token-labeling recipe of "All Tokens Matter: Token Labeling for Training Better Vision
Transformers", https://arxiv.org/abs/2104.10858.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmpretrain.models.heads import ClsHead
from mmpretrain.structures import DataSample
from torch import nn

from ...registry import MODELS
from ..backbones.lvt import TokenBox, swap_box
from ..layers import DropPath, Mlp, Size, SpatialReductionAttention, nchw_to_nlc


class ClassAttention(SpatialReductionAttention):
    """The class token (query) attending to every token, itself included (keys and values)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, attn_drop: float = 0.,
                 proj_drop: float = 0.):
        super().__init__(dim, num_heads, sr_ratio=1, qkv_bias=qkv_bias, attn_drop=attn_drop,
                         proj_drop=proj_drop)

    def project_query(self, x: torch.Tensor, size: Optional[Size]) -> torch.Tensor:
        """Only the class token, first of (B, 1 + N, C), asks: (B, 1, C) queries."""
        return self.q(x[:, :1])


class ClassAttentionBlock(nn.Module):
    """Pre-norm block that updates only the class token; the other tokens pass through."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4., qkv_bias: bool = False,
                 drop: float = 0., attn_drop: float = 0., drop_path: float = 0.):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ClassAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls_token = x[:, :1] + self.drop_path(self.attn(self.norm1(x)))
        cls_token = cls_token + self.drop_path(self.mlp(self.norm2(cls_token)))
        return torch.cat([cls_token, x[:, 1:]], dim=1)


@MODELS.register_module()
class LVTClsHead(ClsHead):
    """LVT's ImageNet head on the last backbone map (https://arxiv.org/abs/2112.10809).

    A class token goes through ``num_cls_blocks`` class-attention blocks over the map's tokens;
    all tokens are normalised; ``fc`` classifies the class token and ``aux_fc`` every other
    token. Inference returns ``fc(cls) + aux_weight * max over tokens of aux_fc(tokens)``.
    ``num_cls_blocks=0, with_aux=False`` gives the plain head: norm, average over tokens, ``fc``.

    Training (token labeling): ``loss = cls_weight * L(fc(cls), y) + dense_weight * L(aux_fc(t), y_t)``
    with the ``loss`` module ``L`` (it must accept soft targets, e.g. ``LabelSmoothLoss``) and the
    dense term averaged over tokens. The per-token targets ``y_t`` are the samples'
    ``gt_dense_score`` fields when present (teacher score maps, ``(num_classes, h, w)``,
    average-pooled to the token grid), otherwise each sample's own label at every token. Under
    MixToken (``mix_box``) the box of the token predictions is swapped back, so every
    prediction refers to its own image and ``y_t`` needs no mixing, while the class target
    becomes ``lam * y + (1 - lam) * y_flipped`` with ``lam = 1 - box area / grid area``.

    Args:
        num_classes: number of categories.
        in_channels: channels of the backbone's last map.
        num_cls_blocks: class-attention blocks (0: average pooling instead of a class token).
        num_heads, mlp_ratio, qkv_bias: of the class-attention blocks.
        with_aux: add ``aux_fc`` on the tokens.
        aux_weight: weight of the token maximum in the inference output.
        cls_weight, dense_weight: weights of the class and token terms of the training loss.
        loss: config of ``L``.
        init_cfg: initialisation config (the linear layers start trunc-normal, std 0.02).
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int = 256,
                 num_cls_blocks: int = 2,
                 num_heads: int = 8,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = False,
                 with_aux: bool = True,
                 aux_weight: float = 0.5,
                 cls_weight: float = 1.0,
                 dense_weight: float = 0.5,
                 loss: dict = dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
                 init_cfg: Optional[dict] = None):
        super().__init__(loss=loss, init_cfg=init_cfg)
        self.num_classes = num_classes
        self.aux_weight = aux_weight
        self.cls_weight = cls_weight
        self.dense_weight = dense_weight
        if num_cls_blocks > 0:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, in_channels))
            nn.init.trunc_normal_(self.cls_token, std=.02)
        self.blocks = nn.ModuleList(
            ClassAttentionBlock(in_channels, num_heads, mlp_ratio, qkv_bias=qkv_bias)
            for _ in range(num_cls_blocks))
        self.norm = nn.LayerNorm(in_channels)
        self.fc = nn.Linear(in_channels, num_classes)
        self.aux_fc = nn.Linear(in_channels, num_classes) if with_aux else None
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _features(self, feats: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor, Size]:
        """Class feature (B, C), normalised tokens (B, H*W, C) and the token grid."""
        x = feats[-1]
        size = (x.shape[2], x.shape[3])
        x = nchw_to_nlc(x)
        if len(self.blocks) == 0:
            x = self.norm(x)
            return x.mean(dim=1), x, size
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x[:, 0], x[:, 1:], size

    def pre_logits(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        return self._features(feats)[0]

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        cls_feat, tokens, _ = self._features(feats)
        score = self.fc(cls_feat)
        if self.aux_fc is not None:
            # a contiguous copy (F.linear copies the sliced tokens anyway): on the slice, torch.export's
            # layout checks would pin the batch size to > 1
            tokens = tokens.clone(memory_format=torch.contiguous_format)
            score = score + self.aux_weight * self.aux_fc(tokens).max(dim=1)[0]
        return score

    def _targets(self, data_samples: List[DataSample], device: torch.device) -> torch.Tensor:
        """(B, num_classes) soft targets: ``gt_score`` if present, else one-hot ``gt_label``."""
        if 'gt_score' in data_samples[0]:
            return torch.stack([s.gt_score for s in data_samples]).to(device).float()
        labels = torch.cat([s.gt_label for s in data_samples]).to(device)
        return F.one_hot(labels, self.num_classes).float()

    def _dense_targets(self, data_samples: List[DataSample], targets: torch.Tensor,
                       size: Size) -> torch.Tensor:
        """(B, H, W, num_classes) token targets: teacher maps pooled to the grid, or the labels."""
        if 'gt_dense_score' in data_samples[0]:
            dense = torch.stack([torch.as_tensor(s.gt_dense_score) for s in data_samples]).to(targets)
            return F.adaptive_avg_pool2d(dense, size).permute(0, 2, 3, 1)
        return targets[:, None, None, :].expand(-1, size[0], size[1], -1)

    def loss(self, feats: Sequence[torch.Tensor], data_samples: List[DataSample],
             mix_box: Optional[TokenBox] = None, **kwargs) -> dict:
        """Class and token losses; ``mix_box`` is the MixToken box of this batch, if any."""
        cls_feat, tokens, size = self._features(feats)
        cls_score = self.fc(cls_feat)
        B, K = cls_score.shape
        targets = self._targets(data_samples, cls_score.device)
        cls_targets = targets
        if mix_box is not None:
            lam = 1. - mix_box.area / (size[0] * size[1])
            cls_targets = lam * targets + (1. - lam) * targets.flip(0)
        losses = dict(
            loss_cls=self.cls_weight * self.loss_module(cls_score, cls_targets, avg_factor=B, **kwargs))
        if self.aux_fc is not None and self.dense_weight > 0:
            aux_score = self.aux_fc(tokens).reshape(B, size[0], size[1], K)
            if mix_box is not None:
                aux_score = swap_box(aux_score, mix_box)
            dense_targets = self._dense_targets(data_samples, targets, size)
            losses['loss_dense'] = self.dense_weight * self.loss_module(
                aux_score.reshape(-1, K), dense_targets.reshape(-1, K), avg_factor=B * size[0] * size[1],
                **kwargs)
        return losses
