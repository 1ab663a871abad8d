"""DaViT: dual attention vision transformers.

"DaViT: Dual Attention Vision Transformers", https://arxiv.org/abs/2204.03645 (official code:
https://github.com/dingmyu/davit, MIT).

Each stage is a patch embedding followed by pairs of blocks: a spatial block (multi-head
attention inside non-overlapping windows) and a channel block (group attention across channels).
Every block puts a conditional positional encoding (``x + depthwise_conv3x3(x)``) before each of
its two pre-norm residual branches.

The network follows the official model exactly (timm's ``davit_*`` are identical): the stem
zero-pads the right/bottom of the image to a multiple of 4 before its 7x7 stride-4 conv (padding 3)
and normalises after the conv; the downsampling layers normalise their *input* channels, pad to
even sizes and apply a 2x2 stride-2 conv; the channel attention map is ``softmax(k^T v)``, scaled
by the group width and applied to ``q``. Window attention pads maps that are not multiples of the
window after ``norm1``; the padded tokens take part as keys and values unless ``mask_padding``.
A 225 x 230 input gives maps of 57x58, 29x29, 15x15 and 8x8.

Keys: ``stages.{i}.patch_embed`` (stage 0: the stem), ``stages.{i}.blocks.{2k}`` and ``{2k + 1}``
(the spatial and channel blocks of pair ``k``), ``out_norms.{i}``. The converter maps the official,
timm and mmpretrain layouts onto these.
"""
import re
from collections import OrderedDict
from functools import partial
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ...registry import MODELS
from ..checkpoint import register_converter, rename_keys
from ..layers import (
    Attention,
    DropPath,
    Mlp,
    PatchEmbed,
    PosConv,
    Size,
    WindowAttention,
    nlc_to_nchw,
    scaled_dot_product_attention,
)
from .base import EmbedStage, VitBackbone, build_out_norms, check_flag, init_vit_weights


class ChannelAttention(Attention):
    """Channel group attention: ``softmax(k^T v * (C/G)^-0.5)`` applied to ``q``.

    The channels split into ``num_heads`` groups; within each group the attention map is
    (C/G) x (C/G), built from keys and values and applied to the queries (the official operand
    roles). It runs as SDPA with ``query=k^T``, ``key=v^T`` and ``value=q^T``.
    """

    def attend(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 4, 1)
        q, k, v = qkv.unbind(0)
        x = scaled_dot_product_attention(
            k, v, q, attn_mask=attn_mask, dropout_p=self.attn_drop if self.training else 0.,
            scale=self.head_dim**-0.5, fused=self.fused_attn)
        return x.permute(0, 3, 1, 2).reshape(B, N, C)

    def forward(self, x: torch.Tensor, size: Size) -> torch.Tensor:
        return self.proj_drop(self.proj(self.attend(x)))


class DaViTBlock(nn.Module):
    """Spatial (window attention) or channel (group attention) block with two positional convs.

    ``x = cpe1(x); x = x + attn(norm1(x)); x = cpe2(x); x = x + mlp(norm2(x))``.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 spatial: bool,
                 window_size: int = 7,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = True,
                 drop_path: float = 0.,
                 mask_padding: bool = False):
        super().__init__()
        self.cpe1 = PosConv(dim)
        self.norm1 = nn.LayerNorm(dim)
        if spatial:
            self.attn = WindowAttention(dim, num_heads, window_size=window_size, qkv_bias=qkv_bias,
                                        mask_padding=mask_padding)
        else:
            self.attn = ChannelAttention(dim, num_heads, qkv_bias=qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.cpe2 = PosConv(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, size: Size) -> torch.Tensor:
        x = self.cpe1(x, size)
        x = self.drop_path.add(x, self.attn(self.norm1(x), size))
        x = self.cpe2(x, size)
        return self.drop_path.add(x, self.mlp(self.norm2(x)))


@MODELS.register_module()
class DaViT(VitBackbone):
    """DaViT backbone (https://arxiv.org/abs/2204.03645).

    Args:
        arch: ``'tiny'``, ``'small'``, ``'base'`` (or mmpretrain's ``'t'``, ``'s'``, ``'b'``) or a dict
            with ``embed_dims``, ``depths`` (the number of spatial/channel block *pairs* per stage)
            and ``num_heads`` (also the number of channel groups), one entry per stage.
        in_channels: image channels.
        out_indices: stages whose maps are returned (NCHW, strides 4/8/16/32).
        window_size: side of the spatial attention windows.
        mlp_ratio: MLP hidden width over the embedding width.
        qkv_bias: biases on the query/key/value projections.
        drop_path_rate: stochastic depth, linearly increasing over all blocks (two per pair).
        norm_after_stage: a LayerNorm on each output, one bool per stage or one for all, as in the
            official dense prediction backbone (the classifier normalises in its head instead).
        mask_padding: exclude the window padding from the spatial attention.
        frozen_stages: ``k`` freezes stages ``0..k-1``, each with the patch embedding that opens
            it (stage 0: the stem) and its output norm; ``0`` and ``-1`` freeze nothing. mmpretrain's
            DaViT counts differently: its ``frozen_stages=k`` freezes the stem and stages ``0..k``
            together with the downsampling layer that follows each, that is vitzoo's
            ``frozen_stages=k + 1`` plus ``stages[k + 1].patch_embed``.
        norm_eval, with_cp, init_cfg: see :class:`VitBackbone`.

    Example:
        >>> import torch
        >>> from vitzoo.models import DaViT
        >>> model = DaViT(arch='tiny').eval()
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 225, 230))]
        [(1, 96, 57, 58), (1, 192, 29, 29), (1, 384, 15, 15), (1, 768, 8, 8)]
    """
    arch_zoo = {
        'tiny': dict(embed_dims=[96, 192, 384, 768], depths=[1, 1, 3, 1], num_heads=[3, 6, 12, 24]),
        'small': dict(embed_dims=[96, 192, 384, 768], depths=[1, 1, 9, 1], num_heads=[3, 6, 12, 24]),
        'base': dict(embed_dims=[128, 256, 512, 1024], depths=[1, 1, 9, 1], num_heads=[4, 8, 16, 32]),
    }
    arch_aliases = {'t': 'tiny', 's': 'small', 'b': 'base'}
    essential_keys = ('embed_dims', 'depths', 'num_heads')
    stage_keys = essential_keys

    paper = 'DaViT'
    flops_note = 'with the attention matmuls, as the DaViT paper counts'
    timm_names = {'tiny': 'davit_tiny', 'small': 'davit_small', 'base': 'davit_base'}
    # The classifiers normalise after pooling, in their head: no output norm is pretrained.
    pretrained_missing_ok = (r'out_norms\.', )

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 window_size: int = 7,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = True,
                 drop_path_rate: float = 0.,
                 norm_after_stage: Union[bool, Sequence[bool]] = True,
                 mask_padding: bool = False,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(arch, out_indices, drop_path_rate, frozen_stages, norm_eval, with_cp, init_cfg)
        check_flag('mask_padding', mask_padding)
        embed_dims, num_heads = self.arch_settings['embed_dims'], self.arch_settings['num_heads']
        self.embed_dims = list(embed_dims)

        stages = []
        for i, rates in enumerate(self.drop_path_rates):
            if i == 0:
                patch_embed = PatchEmbed(in_channels, embed_dims[0], kernel_size=7, stride=4, padding=3,
                                         norm_layer=nn.LayerNorm, pad_to_stride=True)
            else:
                patch_embed = PatchEmbed(embed_dims[i - 1], embed_dims[i], kernel_size=2, stride=2,
                                         norm_layer=nn.LayerNorm, norm_first=True, pad_to_stride=True)
            blocks = [
                DaViTBlock(embed_dims[i], num_heads[i], spatial=j % 2 == 0, window_size=window_size,
                           mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=rate, mask_padding=mask_padding)
                for j, rate in enumerate(rates)
            ]
            stages.append(EmbedStage(patch_embed, blocks))
        self.stages = nn.ModuleList(stages)

        self.out_norms = build_out_norms(embed_dims, norm_after_stage)

        # the official initialisation: trunc-normal linears; convs keep PyTorch's default
        self.apply(partial(init_vit_weights, conv_fan_out=False))
        self._freeze_stages()

    @classmethod
    def blocks_per_stage(cls, arch: dict) -> List[int]:
        """Two blocks (spatial, channel) per pair."""
        return [2 * depth for depth in arch['depths']]

    def stage_output(self, index: int, x: torch.Tensor, size: Size,
                     keep: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The output norm applies to the returned map only; the next stage takes the raw tokens."""
        out = nlc_to_nchw(self.out_norms[index](x), size).contiguous() if keep else None
        return nlc_to_nchw(x, size), out


def _block_index(match: re.Match) -> str:
    """Official/timm ``<stage>.<pair>.<0 spatial | 1 channel>`` -> vitzoo's flat block list."""
    stage, pair, kind = match.group(1), int(match.group(2)), int(match.group(3))
    return f'backbone.stages.{stage}.blocks.{2 * pair + kind}.'


def _mmpretrain_block_index(match: re.Match) -> str:
    """mmpretrain's ``<stage>.blocks.<pair>.{spatial,channel}_block`` -> vitzoo's flat block list."""
    stage, pair, kind = match.group(1), int(match.group(2)), match.group(3)
    return f'backbone.stages.{stage}.blocks.{2 * pair + (kind == "channel")}.'


def _mmpretrain_downsample(match: re.Match) -> str:
    """mmpretrain keeps the downsampling layer that opens stage ``i + 1`` in stage ``i``."""
    layer = 'proj' if match.group(2) == 'projection' else 'norm'
    return f'backbone.stages.{int(match.group(1)) + 1}.patch_embed.{layer}.'


# Official classifier (and, with ``backbone.``, the official dense backbone with norm0..norm3).
_OFFICIAL_RULES = [
    (r'^(?:backbone\.)?patch_embeds\.(\d+)\.', r'backbone.stages.\1.patch_embed.'),
    (r'^(?:backbone\.)?main_blocks\.(\d+)\.(\d+)\.([01])\.', _block_index),
    (r'\.cpe\.0\.', '.cpe1.'),
    (r'\.cpe\.1\.', '.cpe2.'),
    (r'^backbone\.norm(\d)\.', r'backbone.out_norms.\1.'),
    (r'^norms\.', 'head.norm.'),
    (r'^head\.(weight|bias)$', r'head.fc.\1'),
]
# timm's davit_* models.
_TIMM_RULES = [
    (r'^stem\.conv\.', 'backbone.stages.0.patch_embed.proj.'),
    (r'^stem\.norm\.', 'backbone.stages.0.patch_embed.norm.'),
    (r'^stages\.(\d+)\.downsample\.conv\.', r'backbone.stages.\1.patch_embed.proj.'),
    (r'^stages\.(\d+)\.downsample\.norm\.', r'backbone.stages.\1.patch_embed.norm.'),
    (r'^stages\.(\d+)\.blocks\.(\d+)\.([01])\.', _block_index),
]
# mmpretrain's DaViT (the model-zoo classifiers, or backbones with per-output norms).
_MMPRETRAIN_RULES = [
    (r'^backbone\.patch_embed\.projection\.', 'backbone.stages.0.patch_embed.proj.'),
    (r'^backbone\.patch_embed\.norm\.', 'backbone.stages.0.patch_embed.norm.'),
    (r'^backbone\.stages\.(\d+)\.downsample\.(projection|norm)\.', _mmpretrain_downsample),
    (r'^backbone\.stages\.(\d+)\.blocks\.(\d+)\.(spatial|channel)_block\.', _mmpretrain_block_index),
    (r'\.attn\.w_msa\.', '.attn.'),
    (r'\.ffn\.layers\.0\.0\.', '.mlp.fc1.'),
    (r'\.ffn\.layers\.1\.', '.mlp.fc2.'),
]
# The zoo classifiers hold the official head norm (applied after pooling) as ``norm3``; backbones
# built with more outputs hold per-output norms ``norm{i}``.
_MMPRETRAIN_HEAD_NORM = [(r'^backbone\.norm3\.', 'head.norm.')]
_MMPRETRAIN_OUT_NORMS = [(r'^backbone\.norm(\d)\.', r'backbone.out_norms.\1.')]


@register_converter('davit')
def convert_davit(state_dict: Mapping[str, torch.Tensor]) -> Optional[OrderedDict]:
    """Official, timm or mmpretrain DaViT state dict -> vitzoo layout; None for other layouts."""
    keys = set(state_dict)
    if any(re.match(r'(backbone\.)?main_blocks\.\d+\.\d+\.[01]\.', k) for k in keys):
        rules, layout = _OFFICIAL_RULES, 'official'
    elif 'stem.conv.weight' in keys and any(re.match(r'stages\.\d+\.blocks\.\d+\.[01]\.cpe1\.', k) for k in keys):
        rules, layout = _TIMM_RULES, 'timm'
    elif any(re.match(r'(backbone\.)?stages\.\d+\.blocks\.\d+\.spatial_block\.', k) for k in keys):
        if 'patch_embed.projection.weight' in keys:
            state_dict = OrderedDict((f'backbone.{k}', v) for k, v in state_dict.items())
        dense = any(re.match(r'backbone\.norm[0-2]\.', k) for k in state_dict)
        rules = _MMPRETRAIN_RULES + (_MMPRETRAIN_OUT_NORMS if dense else _MMPRETRAIN_HEAD_NORM)
        layout = 'mmpretrain'
    else:
        return None
    return rename_keys(state_dict, rules, layout)
