"""Twins-PCPVT and Twins-SVT.

"Twins: Revisiting the Design of Spatial Attention in Vision Transformers",
https://arxiv.org/abs/2104.13840 (official code: https://github.com/Meituan-AutoML/Twins, Apache-2.0).

Each stage is a non-overlapping conv patch embedding, a stack of pre-norm transformer blocks and
a positional conv (PEG) after the first block. PCPVT uses global sub-sampled attention (GSA) in
every block; SVT alternates locally-grouped window attention (LSA, even blocks) with GSA (odd
blocks).

Input sizes: the patch embeddings drop remainder pixels as the official model does (a 225 x 319
input gives maps of 56x79, 28x39, 14x19, 7x9). LSA pads maps that are not multiples of the window
with zeros on the right and bottom; by default the padded tokens take part as keys and values, as
in the official classification/detection code and timm (``mask_padding=True`` excludes them).
"""
from collections import OrderedDict
from typing import Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ...registry import MODELS
from ..checkpoint import register_converter, rename_keys
from ..layers import (DropPath, Mlp, PatchEmbed, PosConv, Size, SpatialReductionAttention,
                      WindowAttention, nlc_to_nchw)
from .base import VitBackbone, build_out_norms, init_vit_weights, normalize_indices, resolve_arch, run_blocks


class TwinsBlock(nn.Module):
    """Pre-norm transformer block with GSA (``window_size=0``) or LSA attention."""

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 mlp_ratio: float,
                 sr_ratio: int = 1,
                 window_size: int = 0,
                 qkv_bias: bool = True,
                 drop: float = 0.,
                 attn_drop: float = 0.,
                 drop_path: float = 0.,
                 mask_padding: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        if window_size > 0:
            self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias, attn_drop, drop,
                                        mask_padding=mask_padding)
        else:
            self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor, size: Size) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), size))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TwinsStage(nn.Module):
    """Patch embedding, blocks, and the positional conv after the first block."""

    def __init__(self, in_chans: int, dim: int, patch_size: int, blocks: Sequence[TwinsBlock],
                 drop_rate: float = 0.):
        super().__init__()
        self.patch_embed = PatchEmbed(in_chans, dim, patch_size, patch_size, norm_layer=nn.LayerNorm)
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = nn.ModuleList(blocks)
        self.pos_block = PosConv(dim)

    def forward(self, x: torch.Tensor, with_cp: bool = False):
        x, size = self.patch_embed(x)
        x = self.pos_drop(x)
        x = run_blocks(self.blocks[:1], x, size, with_cp=with_cp)
        x = self.pos_block(x, size)
        x = run_blocks(self.blocks[1:], x, size, with_cp=with_cp)
        return x, size


class Twins(VitBackbone):
    """Shared implementation of :class:`PCPVT` and :class:`SVT`.

    Args:
        arch: a name from ``arch_zoo`` or a dict with ``embed_dims``, ``depths``, ``num_heads``,
            ``mlp_ratios``, ``sr_ratios`` (and ``window_sizes`` for SVT; ``patch_sizes``
            defaults to ``[4, 2, 2, 2]``).
        in_channels: image channels.
        out_indices: stages whose maps are returned (NCHW, strides 4/8/16/32).
        qkv_bias: biases on the query/key/value projections.
        drop_rate, attn_drop_rate: dropout after projections/MLPs and on attention weights.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        norm_after_stage: a LayerNorm (eps 1e-6) on each output, one bool per stage or one for all.
        mask_padding: exclude LSA's padding tokens from attention (SVT only).
        frozen_stages, norm_eval, with_cp, init_cfg: see :class:`VitBackbone`.
    """
    arch_zoo: dict = {}
    essential_keys = ('embed_dims', 'depths', 'num_heads', 'mlp_ratios', 'sr_ratios')
    default_norm_after_stage: bool = False

    def __init__(self,
                 arch: Union[str, dict] = 'small',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 qkv_bias: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 norm_after_stage: Optional[Union[bool, Sequence[bool]]] = None,
                 mask_padding: bool = False,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(frozen_stages, norm_eval, with_cp, init_cfg)
        arch = resolve_arch(arch, self.arch_zoo, self.essential_keys, type(self).__name__)
        embed_dims, depths = arch['embed_dims'], arch['depths']
        num_stages = len(depths)
        patch_sizes = arch.get('patch_sizes', [4] + [2] * (num_stages - 1))
        window_sizes = arch.get('window_sizes', [0] * num_stages)
        self.embed_dims = list(embed_dims)
        self.out_indices = normalize_indices(out_indices, num_stages, 'out_indices')

        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        stages, in_chans, cursor = [], in_channels, 0
        for i in range(num_stages):
            blocks = [
                TwinsBlock(embed_dims[i], arch['num_heads'][i], arch['mlp_ratios'][i],
                           sr_ratio=arch['sr_ratios'][i],
                           window_size=window_sizes[i] if j % 2 == 0 else 0,
                           qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate,
                           drop_path=dpr[cursor + j], mask_padding=mask_padding)
                for j in range(depths[i])
            ]
            stages.append(TwinsStage(in_chans, embed_dims[i], patch_sizes[i], blocks, drop_rate))
            in_chans, cursor = embed_dims[i], cursor + depths[i]
        self.stages = nn.ModuleList(stages)

        if norm_after_stage is None:
            norm_after_stage = self.default_norm_after_stage
        self.out_norms = build_out_norms(embed_dims, norm_after_stage, eps=1e-6)

        self.apply(init_vit_weights)  # the official initialisation
        self._freeze_stages()

    def forward(self, x: torch.Tensor) -> tuple:
        outs = []
        for i, stage in enumerate(self.stages):
            x, size = stage(x, with_cp=self.with_cp)
            x = nlc_to_nchw(self.out_norms[i](x), size).contiguous()
            if i in self.out_indices:
                outs.append(x)
            if i == self.out_indices[-1]:
                break
        return tuple(outs)


@MODELS.register_module()
class PCPVT(Twins):
    """Twins-PCPVT: PVT with conditional position encoding (https://arxiv.org/abs/2104.13840).

    Example:
        >>> import torch
        >>> from vitzoo.models import PCPVT
        >>> model = PCPVT(arch='small').eval()
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 224, 224))]
        [(1, 64, 56, 56), (1, 128, 28, 28), (1, 320, 14, 14), (1, 512, 7, 7)]
    """
    arch_zoo = {
        'small': dict(embed_dims=[64, 128, 320, 512], depths=[3, 4, 6, 3], num_heads=[1, 2, 5, 8],
                      mlp_ratios=[8, 8, 4, 4], sr_ratios=[8, 4, 2, 1]),
        'base': dict(embed_dims=[64, 128, 320, 512], depths=[3, 4, 18, 3], num_heads=[1, 2, 5, 8],
                     mlp_ratios=[8, 8, 4, 4], sr_ratios=[8, 4, 2, 1]),
        'large': dict(embed_dims=[64, 128, 320, 512], depths=[3, 8, 27, 3], num_heads=[1, 2, 5, 8],
                      mlp_ratios=[8, 8, 4, 4], sr_ratios=[8, 4, 2, 1]),
    }


@MODELS.register_module()
class SVT(Twins):
    """Twins-SVT: spatially separable self-attention (https://arxiv.org/abs/2104.13840).

    Outputs carry a LayerNorm by default (``norm_after_stage=True``), as in the official dense
    prediction code.

    Example:
        >>> import torch
        >>> from vitzoo.models import SVT
        >>> model = SVT(arch='small').eval()
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 225, 319))]
        [(1, 64, 56, 79), (1, 128, 28, 39), (1, 256, 14, 19), (1, 512, 7, 9)]
    """
    essential_keys = Twins.essential_keys + ('window_sizes', )
    default_norm_after_stage = True
    arch_zoo = {
        'small': dict(embed_dims=[64, 128, 256, 512], depths=[2, 2, 10, 4], num_heads=[2, 4, 8, 16],
                      mlp_ratios=[4, 4, 4, 4], sr_ratios=[8, 4, 2, 1], window_sizes=[7, 7, 7, 7]),
        'base': dict(embed_dims=[96, 192, 384, 768], depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24],
                     mlp_ratios=[4, 4, 4, 4], sr_ratios=[8, 4, 2, 1], window_sizes=[7, 7, 7, 7]),
        'large': dict(embed_dims=[128, 256, 512, 1024], depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32],
                      mlp_ratios=[4, 4, 4, 4], sr_ratios=[8, 4, 2, 1], window_sizes=[7, 7, 7, 7]),
    }


# Official and timm classifiers (identical key sets) -> vitzoo's classifier layout.
_OFFICIAL_RULES = [
    (r'^patch_embeds\.(\d+)\.', r'backbone.stages.\1.patch_embed.'),
    (r'^blocks\.(\d+)\.(\d+)\.', r'backbone.stages.\1.blocks.\2.'),
    (r'^pos_block\.(\d+)\.proj\.0\.', r'backbone.stages.\1.pos_block.proj.'),
    (r'^norm\.', 'backbone.out_norms.3.'),
    (r'^head\.', 'head.fc.'),
]
# mmpretrain's PCPVT/SVT classifiers (the mmpretrain model-zoo files).
_MMPRETRAIN_RULES = [
    (r'^backbone\.patch_embeds\.(\d+)\.projection\.', r'backbone.stages.\1.patch_embed.proj.'),
    (r'^backbone\.patch_embeds\.(\d+)\.norm\.', r'backbone.stages.\1.patch_embed.norm.'),
    (r'^backbone\.stages\.(\d+)\.(\d+)\.', r'backbone.stages.\1.blocks.\2.'),
    (r'\.ffn\.layers\.0\.0\.', '.mlp.fc1.'),
    (r'\.ffn\.layers\.1\.', '.mlp.fc2.'),
    (r'^backbone\.position_encodings\.(\d+)\.proj\.', r'backbone.stages.\1.pos_block.proj.'),
    (r'^backbone\.norm_after_stage(\d+)\.', r'backbone.out_norms.\1.'),
]


@register_converter('twins')
def convert_twins(state_dict: Mapping[str, torch.Tensor]) -> Optional[OrderedDict]:
    """Official/timm or mmpretrain Twins state dict -> vitzoo layout; None for other layouts."""
    keys = set(state_dict)
    if 'patch_embeds.0.proj.weight' in keys and any(k.startswith('blocks.0.0.') for k in keys):
        rules, layout = _OFFICIAL_RULES, 'official/timm'
    elif 'patch_embeds.0.projection.weight' in keys:
        state_dict = OrderedDict((f'backbone.{k}', v) for k, v in state_dict.items())
        rules, layout = _MMPRETRAIN_RULES, 'mmpretrain backbone'
    elif 'backbone.patch_embeds.0.projection.weight' in keys:
        rules, layout = _MMPRETRAIN_RULES, 'mmpretrain'
    else:
        return None
    return rename_keys(state_dict, rules, layout)
