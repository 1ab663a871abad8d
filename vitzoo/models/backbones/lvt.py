"""LVT: Lite Vision Transformer.

"Lite Vision Transformer with Enhanced Self-Attention", https://arxiv.org/abs/2112.10809
(CVPR 2022). Implemented from the paper; the official code is under a research-only licence and
no line of it is used here. Its checkpoints load through the ``lvt`` converter below.

Four stages (64, 64, 160, 256 channels, two blocks each) behind overlapping conv patch
embeddings (7x7 stride 4, then 3x3 stride 2). Stage 1 uses Convolutional Self-Attention (CSA),
stages 2-4 Recursive Atrous Self-Attention (RASA); the MLPs of stages 2-4 carry a depthwise 3x3
conv. Any input size works: every map is ``ceil`` of the previous one over the stride
(225 x 230 gives 57x58, 29x29, 15x15, 8x8).

The ImageNet model adds class-attention blocks and token-labeling heads on top of this backbone
(:class:`~vitzoo.models.heads.LVTClsHead`, :class:`~vitzoo.models.classifiers.LVTClassifier`).
MixToken, its training-time augmentation, swaps a box of the stage-1 tokens between samples;
the box lives on the last stage's grid (:func:`sample_token_box`, :func:`swap_box`).
"""
import math
from collections import OrderedDict
from typing import Callable, List, Mapping, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import MODELS
from ..checkpoint import register_converter, rename_keys
from ..layers import (
    Block,
    ConvMlp,
    Linear,
    Mlp,
    PatchEmbed,
    Size,
    SpatialReductionAttention,
    known_zero,
    nchw_to_nlc,
    nlc_to_nchw,
)
from .base import EmbedStage, VitBackbone, init_vit_weights, run_blocks


class TokenBox(NamedTuple):
    """A box ``[top, bottom) x [left, right)`` on a token grid."""
    top: int
    left: int
    bottom: int
    right: int

    def scale(self, factor: int) -> 'TokenBox':
        return TokenBox(*(v * factor for v in self))

    @property
    def area(self) -> int:
        return (self.bottom - self.top) * (self.right - self.left)


def sample_token_box(grid: Size, beta: float = 1.0) -> TokenBox:
    """A CutMix box on ``grid``: side ratio ``sqrt(1 - lam)``, ``lam ~ Beta(beta, beta)``.

    The centre is uniform over the grid and the box is clipped to it, so its area (not ``lam``)
    gives the mixing ratio.
    """
    H, W = grid
    lam = torch.distributions.Beta(beta, beta).sample().item()
    ratio = math.sqrt(1. - lam)
    half_h, half_w = int(H * ratio) // 2, int(W * ratio) // 2
    cy, cx = torch.randint(H, ()).item(), torch.randint(W, ()).item()
    return TokenBox(max(cy - half_h, 0), max(cx - half_w, 0), min(cy + half_h, H), min(cx + half_w, W))


def swap_box(x: torch.Tensor, box: TokenBox) -> torch.Tensor:
    """Replace ``box`` of every sample of a (B, H, W, C) map by that of the batch-flipped sample.

    Swapping the same box twice restores the input.
    """
    inside = torch.zeros(1, x.shape[1], x.shape[2], 1, dtype=torch.bool, device=x.device)
    inside[:, box.top:box.bottom, box.left:box.right] = True
    return torch.where(inside, x.flip(0), x)


class ConvSelfAttention(nn.Module):
    """Convolutional Self-Attention (CSA) of LVT's first stage, on (B, N, C) tokens.

    Every output position of a stride-2 grid attends to its 3x3 neighbourhood with weights
    generated from a 2x average-pooled map: a linear layer turns each pooled token into one 9x9
    matrix per head (output position x input neighbour). The values are the unfolded neighbours,
    each transformed by its own CxC matrix (a grouped 1x1 conv over the 9 positions). The 3x3
    outputs of neighbouring windows overlap and are summed back onto the full-resolution map.
    """

    kernel_size = 3
    stride = 2

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0., proj_drop: float = 0.):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f'dim ({dim}) must be divisible by num_heads ({num_heads})')
        self.num_heads = num_heads
        self.scale = (dim // num_heads)**-0.5
        k2 = self.kernel_size**2
        self.attn_gen = Linear(dim, k2 * k2 * num_heads)
        self.value = nn.Conv2d(k2 * dim, k2 * dim, 1, groups=k2, bias=False)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, size: Size) -> torch.Tensor:
        B, N, C = x.shape
        k, s, k2, heads = self.kernel_size, self.stride, self.kernel_size**2, self.num_heads
        x = nlc_to_nchw(x, size)
        # avg_pool2d(ceil_mode=True) without its size rule, which torch.export cannot decide: an odd
        # side repeats its last row/column, whose mean with itself is the ceil-mode window's mean
        pad_b, pad_r = size[0] % s, size[1] % s
        even = x if known_zero(pad_b, pad_r) else F.pad(x, (0, pad_r, 0, pad_b), mode='replicate')
        pooled = F.avg_pool2d(even, s, s)
        L = pooled.shape[2] * pooled.shape[3]
        # (B, L, heads * 9 * 9) -> (B, heads, L, 9 outputs, 9 neighbours)
        attn = self.attn_gen(nchw_to_nlc(pooled)).reshape(B, L, heads, k2, k2).transpose(1, 2)
        attn = self.attn_drop((attn * self.scale).softmax(dim=-1))
        # neighbours (B, C * 9, L) -> (B, L, 9, C), one CxC transform per kernel position
        v = F.unfold(x, k, padding=k // 2, stride=s).reshape(B, C, k2, L).permute(0, 3, 2, 1)
        v = torch.einsum('blpc,poc->blpo', v, self.value.weight.view(k2, C, C))
        v = v.reshape(B, L, k2, heads, C // heads).permute(0, 3, 1, 2, 4)
        out = attn @ v  # (B, heads, L, 9, C / heads)
        out = out.permute(0, 1, 4, 3, 2).reshape(B, C * k2, L)
        out = F.fold(out, size, k, padding=k // 2, stride=s)  # sums the overlapping windows
        return self.proj_drop(self.proj(nchw_to_nlc(out)))


class RecursiveAtrousAttention(SpatialReductionAttention):
    """Recursive Atrous Self-Attention (RASA) of LVT's stages 2-4, on (B, N, C) tokens.

    Spatial-reduction attention whose queries pass through one depthwise 3x3 kernel applied at
    several dilations (``act`` after each, summed). The whole attention ``A`` is applied
    recursively with shared weights: ``x_1 = act(A(x))``, ``x_{i+1} = act(A(x_i + x_i'))`` where
    ``x_i'`` is the previous recursion's input, so two recursions give ``act(A(act(A(x)) + x))``.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 sr_ratio: int = 1,
                 atrous_rates: Sequence[int] = (1, 3, 5),
                 recursions: int = 2,
                 act_layer: Callable[..., nn.Module] = nn.SiLU,
                 qkv_bias: bool = False,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.):
        super().__init__(dim, num_heads, sr_ratio=sr_ratio, qkv_bias=qkv_bias, attn_drop=attn_drop,
                         proj_drop=proj_drop)
        if recursions < 1:
            raise ValueError(f'recursions must be >= 1, got {recursions}')
        self.atrous_rates = tuple(atrous_rates)
        self.recursions = recursions
        self.atrous_weight = nn.Parameter(torch.empty(dim, 1, 3, 3))
        nn.init.kaiming_uniform_(self.atrous_weight)
        self.act = act_layer()

    def project_query(self, x: torch.Tensor, size: Size) -> torch.Tensor:
        q = nlc_to_nchw(self.q(x), size)
        q = sum(
            self.act(F.conv2d(q, self.atrous_weight, padding=rate, dilation=rate, groups=q.shape[1]))
            for rate in self.atrous_rates)
        return nchw_to_nlc(q)

    def forward(self, x: torch.Tensor, size: Size) -> torch.Tensor:
        shortcut = x
        x = self.act(super().forward(x, size))
        for _ in range(self.recursions - 1):
            x = shortcut = x + shortcut
            x = self.act(super().forward(x, size))
        return x


ATTENTION_TYPES = ('csa', 'rasa')


def lvt_block(dim: int,
              num_heads: int,
              mlp_ratio: float,
              attn_type: str = 'rasa',
              conv_mlp: bool = True,
              sr_ratio: int = 1,
              atrous_rates: Sequence[int] = (1, 3, 5),
              recursions: int = 2,
              act_layer: Callable[..., nn.Module] = nn.SiLU,
              qkv_bias: bool = False,
              drop: float = 0.,
              attn_drop: float = 0.,
              drop_path: float = 0.) -> Block:
    """Pre-norm block (LayerNorm eps 1e-5): CSA or RASA, then a linear MLP or one with a depthwise conv."""
    if attn_type == 'csa':
        attn = ConvSelfAttention(dim, num_heads, attn_drop=attn_drop, proj_drop=drop)
    else:
        attn = RecursiveAtrousAttention(dim, num_heads, sr_ratio=sr_ratio, atrous_rates=atrous_rates,
                                        recursions=recursions, act_layer=act_layer, qkv_bias=qkv_bias,
                                        attn_drop=attn_drop, proj_drop=drop)
    mlp = (ConvMlp if conv_mlp else Mlp)(dim, int(dim * mlp_ratio), drop=drop)
    return Block(dim, attn, mlp, drop_path=drop_path, norm_eps=1e-5)


class LVTStage(EmbedStage):
    """Overlapping patch embedding followed by the stage's blocks."""

    def forward(self, x: torch.Tensor, with_cp: bool = False, mix_box: Optional[TokenBox] = None):
        """(B, C_in, H, W) -> (B, N, C) tokens and their grid size.

        ``mix_box`` (MixToken): that box of the embedded tokens is taken from the batch-flipped
        sample before the blocks run.
        """
        x, size = self.patch_embed(x)
        if mix_box is not None:
            x = swap_box(x.reshape(x.shape[0], size[0], size[1], -1), mix_box).flatten(1, 2)
        return run_blocks(self.blocks, x, size, with_cp=with_cp), size


@MODELS.register_module()
class LVT(VitBackbone):
    """LVT backbone (https://arxiv.org/abs/2112.10809) returning NCHW maps at strides 4/8/16/32.

    Args:
        arch: ``'lvt'`` (the published model, 3.43M parameters) or a dict with ``embed_dims``,
            ``depths``, ``num_heads``, ``mlp_ratios``, ``sr_ratios``, ``attn_types`` (``'csa'`` or
            ``'rasa'``) and ``conv_mlps`` (depthwise conv in the MLP), one entry per stage.
        in_channels: image channels.
        out_indices: stages whose maps are returned.
        qkv_bias: biases on RASA's query and key/value projections (CSA has none).
        atrous_rates: dilations of RASA's shared depthwise query conv.
        recursions: how many times RASA applies its attention.
        act_layer: RASA's activation (after each atrous branch and each recursion).
        drop_rate, attn_drop_rate: dropout after projections/MLPs and on attention weights.
        drop_path_rate: stochastic depth, linearly increasing over all blocks (the official
            classification code ignores this argument).
        frozen_stages, norm_eval, with_cp, init_cfg: see :class:`VitBackbone`; the official
            ImageNet checkpoint and the official backbone-only file both load through
            ``init_cfg=dict(type='Pretrained', checkpoint=...)``.

    The outputs carry no extra norm, as in the official dense-prediction code.

    Example:
        >>> import torch
        >>> from vitzoo.models import LVT
        >>> model = LVT().eval()
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 225, 230))]
        [(1, 64, 57, 58), (1, 64, 29, 29), (1, 160, 15, 15), (1, 256, 8, 8)]
    """
    arch_zoo = {
        'lvt': dict(embed_dims=[64, 64, 160, 256], depths=[2, 2, 2, 2], num_heads=[2, 2, 5, 8],
                    mlp_ratios=[4, 8, 4, 4], sr_ratios=[8, 4, 2, 1],
                    attn_types=['csa', 'rasa', 'rasa', 'rasa'], conv_mlps=[False, True, True, True]),
    }
    essential_keys = ('embed_dims', 'depths', 'num_heads', 'mlp_ratios', 'sr_ratios', 'attn_types',
                      'conv_mlps')
    stage_keys = essential_keys

    paper = 'LVT'
    flops_note = 'with the attention matmuls, as the LVT paper counts'

    def __init__(self,
                 arch: Union[str, dict] = 'lvt',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 qkv_bias: bool = False,
                 atrous_rates: Sequence[int] = (1, 3, 5),
                 recursions: int = 2,
                 act_layer: Callable[..., nn.Module] = nn.SiLU,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(arch, out_indices, drop_path_rate, frozen_stages, norm_eval, with_cp, init_cfg,
                         dropout_rates=dict(drop_rate=drop_rate, attn_drop_rate=attn_drop_rate))
        arch = self.arch_settings
        unknown = [t for t in arch['attn_types'] if t not in ATTENTION_TYPES]
        if unknown:
            raise ValueError(f"LVT arch['attn_types'] entries must be one of {ATTENTION_TYPES}, "
                             f"got {arch['attn_types']}")
        embed_dims = arch['embed_dims']
        self.embed_dims = list(embed_dims)

        stages, in_chans = [], in_channels
        for i, rates in enumerate(self.drop_path_rates):
            kernel, stride = (7, 4) if i == 0 else (3, 2)
            patch_embed = PatchEmbed(in_chans, embed_dims[i], kernel, stride, padding=kernel // 2,
                                     norm_layer=nn.LayerNorm)
            blocks = [
                lvt_block(embed_dims[i], arch['num_heads'][i], arch['mlp_ratios'][i],
                          attn_type=arch['attn_types'][i], conv_mlp=arch['conv_mlps'][i],
                          sr_ratio=arch['sr_ratios'][i], atrous_rates=atrous_rates, recursions=recursions,
                          act_layer=act_layer, qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate,
                          drop_path=rate)
                for rate in rates
            ]
            stages.append(LVTStage(patch_embed, blocks))
            in_chans = embed_dims[i]
        self.stages = nn.ModuleList(stages)
        # MixToken boxes live on the last stage's grid; this scales them to the first stage's.
        self.mix_scale = math.prod(stage.patch_embed.stride for stage in self.stages[1:])

        self.apply(self._init_module)
        self._freeze_stages()

    @staticmethod
    def _init_module(m: nn.Module) -> None:
        """Trunc-normal linears, fan-out normal convs; CSA's value transforms normal(0, sqrt(2/9C))."""
        init_vit_weights(m)
        if isinstance(m, ConvSelfAttention):
            nn.init.normal_(m.value.weight, 0, math.sqrt(2.0 / m.value.out_channels))

    def out_sizes(self, height: int, width: int) -> List[Size]:
        """The (H, W) of every stage's map for a ``height`` x ``width`` input."""
        sizes = []
        for stage in self.stages:
            conv = stage.patch_embed.proj
            height, width = ((n + 2 * p - k) // s + 1 for n, p, k, s in zip(
                (height, width), conv.padding, conv.kernel_size, conv.stride))
            sizes.append((height, width))
        return sizes

    def forward(self, x: torch.Tensor, mix_box: Optional[TokenBox] = None) -> tuple:
        """Maps of the ``out_indices`` stages, NCHW.

        ``mix_box`` (MixToken, training): a box on the last stage's grid; that region of the
        stage-1 tokens is swapped with the batch-flipped sample's.
        """
        return self.run_stages(x, mix_box=None if mix_box is None else mix_box.scale(self.mix_scale))


# Official layouts -> vitzoo's: the ImageNet model ``lvt_cls`` (179 tensors, under
# ``state_dict`` in lvt_imagenet.pth.tar) and the flat backbone-only file for dense tasks
# (the 148 ``backbone.*`` tensors).
_OFFICIAL_RULES = [
    (r'^head\.', 'head.fc.'),
    (r'^backbone\.(\d+)\.0\.', r'backbone.stages.\1.patch_embed.'),
    (r'^backbone\.(\d+)\.1\.(\d+)\.', r'backbone.stages.\1.blocks.\2.'),
    (r'\.attn\.attn\.', '.attn.attn_gen.'),
    (r'\.attn\.weight\.weight$', '.attn.value.weight'),
    (r'\.attn\.ds\.weight$', '.attn.atrous_weight'),
    (r'\.mlp\.depconv\.', '.mlp.dwconv.'),
    (r'^cls_token$', 'head.cls_token'),
    (r'^post_network\.(\d+)\.', r'head.blocks.\1.'),
    (r'^norm\.', 'head.norm.'),
    (r'^aux_head\.', 'head.aux_fc.'),
]


@register_converter('lvt')
def convert_lvt(state_dict: Mapping[str, torch.Tensor]) -> Optional[OrderedDict]:
    """Official LVT state dict (classifier or backbone-only) -> vitzoo layout; None otherwise."""
    keys = set(state_dict)
    if 'backbone.0.0.proj.weight' not in keys or 'backbone.0.1.0.attn.attn.weight' not in keys:
        return None
    return rename_keys(state_dict, _OFFICIAL_RULES, 'official')
