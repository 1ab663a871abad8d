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
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ...registry import MODELS
from ..checkpoint import register_converter, rename_keys
from ..layers import Block, Mlp, PatchEmbed, PosConv, Size, SpatialReductionAttention, WindowAttention, nlc_to_nchw
from .base import VitBackbone, build_out_norms, check_flag, init_vit_weights, run_blocks


def twins_block(dim: int,
                num_heads: int,
                mlp_ratio: float,
                sr_ratio: int = 1,
                window_size: int = 0,
                qkv_bias: bool = True,
                drop: float = 0.,
                attn_drop: float = 0.,
                drop_path: float = 0.,
                mask_padding: bool = False) -> Block:
    """Pre-norm block (LayerNorm eps 1e-6) with GSA (``window_size=0``) or LSA attention."""
    if window_size > 0:
        attn = WindowAttention(dim, num_heads, window_size, qkv_bias, attn_drop, drop, mask_padding=mask_padding)
    else:
        attn = SpatialReductionAttention(dim, num_heads, sr_ratio, qkv_bias, attn_drop, drop)
    return Block(dim, attn, Mlp(dim, int(dim * mlp_ratio), drop=drop), drop_path=drop_path, norm_eps=1e-6)


class TwinsStage(nn.Module):
    """Patch embedding, blocks, and the positional conv after the first block."""

    def __init__(self, in_chans: int, dim: int, patch_size: int, blocks: Sequence[Block], drop_rate: float = 0.):
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
        arch: a name from ``arch_zoo`` (or mmpretrain's short alias: ``'s'``, ``'b'``, ``'l'``) or a
            dict with ``embed_dims``, ``depths``, ``num_heads``, ``mlp_ratios``, ``sr_ratios`` (and
            ``window_sizes`` for SVT; ``patch_sizes`` defaults to ``[4, 2, 2, 2]``; mmpretrain's
            ``strides`` may be given and must equal ``patch_sizes``), one entry per stage.
        in_channels: image channels.
        out_indices: stages whose maps are returned (NCHW, strides 4/8/16/32).
        qkv_bias: biases on the query/key/value projections.
        drop_rate, attn_drop_rate: dropout after projections/MLPs and on attention weights.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        norm_after_stage: a LayerNorm (eps 1e-6) on each output, one bool per stage or one for all;
            it also feeds the next stage, as in the official dense code.
        mask_padding: exclude LSA's padding tokens from attention (SVT only).
        frozen_stages, norm_eval, with_cp, init_cfg: see :class:`VitBackbone`.
    """
    essential_keys = ('embed_dims', 'depths', 'num_heads', 'mlp_ratios', 'sr_ratios')
    optional_keys = ('patch_sizes', 'strides', 'window_sizes')
    stage_keys = essential_keys + optional_keys
    arch_aliases = {'s': 'small', 'b': 'base', 'l': 'large'}
    default_norm_after_stage: bool = False

    paper = 'Twins'
    paper_flops_count_attention = False  # mmcv-style module-hook counters never see them
    flops_note = 'without the attention matmuls, as the Twins paper counts'
    no_weight_decay_keys = ('.pos_block.', )  # the official no_weight_decay(): the positional convs

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
        super().__init__(arch, out_indices, drop_path_rate, frozen_stages, norm_eval, with_cp, init_cfg,
                         dropout_rates=dict(drop_rate=drop_rate, attn_drop_rate=attn_drop_rate))
        check_flag('mask_padding', mask_padding)
        arch = self.arch_settings
        embed_dims = arch['embed_dims']
        patch_sizes = self.stage_strides(arch)
        window_sizes = arch.get('window_sizes', [0] * self.num_stages)
        self.embed_dims = list(embed_dims)

        stages, in_chans = [], in_channels
        for i, rates in enumerate(self.drop_path_rates):
            blocks = [
                twins_block(embed_dims[i], arch['num_heads'][i], arch['mlp_ratios'][i],
                            sr_ratio=arch['sr_ratios'][i], window_size=window_sizes[i] if j % 2 == 0 else 0,
                            qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate, drop_path=rate,
                            mask_padding=mask_padding)
                for j, rate in enumerate(rates)
            ]
            stages.append(TwinsStage(in_chans, embed_dims[i], patch_sizes[i], blocks, drop_rate))
            in_chans = embed_dims[i]
        self.stages = nn.ModuleList(stages)

        if norm_after_stage is None:
            norm_after_stage = self.default_norm_after_stage
        self.out_norms = build_out_norms(embed_dims, norm_after_stage, eps=1e-6)

        self.apply(init_vit_weights)  # the official initialisation
        self._freeze_stages()

    @classmethod
    def stage_strides(cls, arch: dict) -> List[int]:
        """The patch sizes (kernel = stride) of the stages' patch embeddings."""
        patch_sizes = list(arch.get('patch_sizes', [4] + [2] * (len(arch['depths']) - 1)))
        if 'strides' in arch and list(arch['strides']) != patch_sizes:
            raise ValueError(f"Twins patch embeddings use stride = patch size: arch['strides'] must equal "
                             f"arch['patch_sizes'] ({patch_sizes}), got {list(arch['strides'])}")
        return patch_sizes

    @property
    def pretrained_missing_ok(self) -> Tuple[str, ...]:
        """Classification checkpoints normalise only the last stage's output (the classifier's norm)."""
        return tuple(rf'out_norms\.{i}\.' for i in range(self.num_stages - 1))

    @property
    def pretrained_unexpected_ok(self) -> Tuple[str, ...]:
        """The classifiers' norm on the last output, where this backbone has none."""
        last = self.num_stages - 1
        return (rf'out_norms\.{last}\.', ) if isinstance(self.out_norms[last], nn.Identity) else ()

    def stage_output(self, index: int, x: torch.Tensor, size: Size,
                     keep: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The output norm's map is both the stage's output and the next stage's input."""
        x = nlc_to_nchw(self.out_norms[index](x), size).contiguous()
        return x, x


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
    timm_names = {'small': 'twins_pcpvt_small', 'base': 'twins_pcpvt_base', 'large': 'twins_pcpvt_large'}


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
    optional_keys = ('patch_sizes', 'strides')
    default_norm_after_stage = True
    arch_zoo = {
        'small': dict(embed_dims=[64, 128, 256, 512], depths=[2, 2, 10, 4], num_heads=[2, 4, 8, 16],
                      mlp_ratios=[4, 4, 4, 4], sr_ratios=[8, 4, 2, 1], window_sizes=[7, 7, 7, 7]),
        'base': dict(embed_dims=[96, 192, 384, 768], depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24],
                     mlp_ratios=[4, 4, 4, 4], sr_ratios=[8, 4, 2, 1], window_sizes=[7, 7, 7, 7]),
        'large': dict(embed_dims=[128, 256, 512, 1024], depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32],
                      mlp_ratios=[4, 4, 4, 4], sr_ratios=[8, 4, 2, 1], window_sizes=[7, 7, 7, 7]),
    }
    timm_names = {'small': 'twins_svt_small', 'base': 'twins_svt_base', 'large': 'twins_svt_large'}


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
