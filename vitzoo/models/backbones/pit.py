"""PiT: Pooling-based Vision Transformer.

"Rethinking Spatial Dimensions of Vision Transformers", https://arxiv.org/abs/2103.16302
(official code: https://github.com/naver-ai/pit, Apache-2.0).

A conv patch embedding without padding (kernel 16 / stride 8, PiT-B 14 / 7) plus a learned
spatial position embedding feeds three stages of plain pre-norm ViT blocks. Stages 2 and 3 open
with a pooling layer: a depthwise stride-2 conv doubles the channels of the map and one linear
layer, shared by the class and distillation tokens, widens the tokens. Only the tokens are
normalised at the end.

Input sizes: the position embedding is kept at the grid of ``img_size`` (27x27 for 224, 31x31
for PiT-B) and resized bicubically to the grid of every other input, in the forward pass; a
checkpoint whose grid differs from the model's is resized the same way as it loads.

Outputs (``out_type``):

* ``'cls_token'``: the normalised class token ``(B, C)``, or ``(class, distillation)`` tokens
  for distilled models, for the classification heads.
* ``'featmap'``: the stage maps before pooling, at strides of about 8/16/32 (7/14/28 for
  PiT-B): ``(B, C, 27, 27), (B, 2C, 14, 14), (B, 4C, 7, 7)`` for PiT-Ti/XS/S at 224.
* ``'pyramid'``: four maps of exactly ``ceil(H/s) x ceil(W/s)`` for ``s = 4, 8, 16, 32``
  (channels ``C, C, 2C, 4C``), the input of SegFormer heads and of FPN necks (Panoptic FPN).
  Like ViTDet's simple feature pyramid, the levels come from resampling: each stage map is
  resized bilinearly to the grid of stride 8/16/32 (a no-op where the sizes agree), and the
  stride-4 level is a learned 2x2 stride-2 transposed conv of the stride-8 level (cropped to
  ``ceil(H/4)`` for heights that are not multiples of 8). The transposed conv is not part of
  ImageNet checkpoints and trains with the dense model.

The final token norm exists only with ``out_type='cls_token'``, so dense models hold no unused
parameters (a classification checkpoint loaded into them reports ``norm.*`` as ignored).
"""
from collections import OrderedDict
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import MODELS
from ..checkpoint import register_converter, rename_keys
from ..layers import Attention, Block, Linear, Mlp, PatchEmbed, Size, known_zero, nchw_to_nlc, nlc_to_nchw
from .base import VitBackbone, check_flag, run_blocks

PYRAMID_STRIDES = (4, 8, 16, 32)


def resize_pos_embed(pos_embed: torch.Tensor, size: Size) -> torch.Tensor:
    """Bicubic resize (``align_corners=False``) of a ``(1, C, H, W)`` position embedding."""
    if known_zero(pos_embed.shape[-2] - size[0], pos_embed.shape[-1] - size[1]):
        return pos_embed
    return F.interpolate(pos_embed, size=tuple(size), mode='bicubic', align_corners=False)


class Pooling(nn.Module):
    """PiT's pooling layer: a depthwise stride-2 conv on the map, a linear layer on the tokens."""

    def __init__(self, in_dim: int, out_dim: int, stride: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size=stride + 1, stride=stride,
                              padding=stride // 2, groups=in_dim)
        self.fc = Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor,
                size: Size) -> Tuple[torch.Tensor, torch.Tensor, Size]:
        x = self.conv(nlc_to_nchw(x, size))
        return nchw_to_nlc(x), self.fc(tokens), (x.shape[2], x.shape[3])


def vit_block(dim: int, num_heads: int, mlp_ratio: float = 4., drop: float = 0., attn_drop: float = 0.,
              drop_path: float = 0.) -> Block:
    """The plain ViT block: LayerNorm eps 1e-6, :class:`Attention` with a fused ``qkv``, :class:`Mlp`."""
    attn = Attention(dim, num_heads, qkv_bias=True, attn_drop=attn_drop, proj_drop=drop)
    return Block(dim, attn, Mlp(dim, int(dim * mlp_ratio), drop=drop), drop_path=drop_path, norm_eps=1e-6)


class PiTStage(nn.Module):
    """The pooling layer that opens the stage (none in the first) and its transformer blocks.

    The class tokens are prepended to the map's tokens for the blocks and split off again.
    """

    def __init__(self, blocks: Sequence[Block], pool: Optional[Pooling] = None):
        super().__init__()
        self.pool = pool
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, size: Size,
                with_cp: bool = False) -> Tuple[torch.Tensor, torch.Tensor, Size]:
        if self.pool is not None:
            x, tokens, size = self.pool(x, tokens, size)
        num_tokens = tokens.shape[1]
        x = run_blocks(self.blocks, torch.cat([tokens, x], dim=1), with_cp=with_cp)
        if torch.compiler.is_exporting():
            # copies: torch.export's layout checks on the sliced views would pin the batch size to > 1
            index = torch.arange(x.shape[1], device=x.device)
            return x.index_select(1, index[num_tokens:]), x.index_select(1, index[:num_tokens]), size
        return x[:, num_tokens:], x[:, :num_tokens], size


class SimplePyramid(nn.Module):
    """Three PiT stage maps -> four maps at strides 4/8/16/32 of the input (see the module doc)."""

    def __init__(self, in_channels: Sequence[int]):
        super().__init__()
        self.upsample = nn.ConvTranspose2d(in_channels[0], in_channels[0], kernel_size=2, stride=2)

    def forward(self, maps: Sequence[torch.Tensor], img_size: Size) -> List[torch.Tensor]:
        H, W = img_size
        sizes = [((H + s - 1) // s, (W + s - 1) // s) for s in PYRAMID_STRIDES]  # ceil, exportable
        levels = []
        for feat, size in zip(maps, sizes[1:]):
            if not known_zero(feat.shape[-2] - size[0], feat.shape[-1] - size[1]):
                feat = F.interpolate(feat, size=size, mode='bilinear', align_corners=False)
            levels.append(feat)
        finest = self.upsample(levels[0])
        crop_b, crop_r = finest.shape[-2] - sizes[0][0], finest.shape[-1] - sizes[0][1]
        if not known_zero(crop_b, crop_r):  # a negative pad crops to ceil(H / 4) x ceil(W / 4) exactly
            finest = F.pad(finest, (0, -crop_r, 0, -crop_b))
        return [finest] + levels


@MODELS.register_module()
class PiT(VitBackbone):
    """PiT backbone (https://arxiv.org/abs/2103.16302).

    Args:
        arch: ``'ti'``, ``'xs'``, ``'s'``, ``'b'`` (or ``'tiny'``, ``'xsmall'``, ``'small'``,
            ``'base'``), or a dict with ``base_dims``, ``depths``, ``num_heads`` (one entry per
            stage), ``patch_size`` and ``stride`` (``mlp_ratio`` defaults to 4). Stage widths are
            ``base_dims[i] * num_heads[i]``.
        distilled: add a distillation token next to the class token (DeiT-style).
        img_size: the input size the position embedding is defined for (pretrained: 224).
        in_channels: image channels.
        out_type: ``'cls_token'``, ``'featmap'`` or ``'pyramid'`` (see the module doc).
        out_indices: outputs to return: stages (``'featmap'``, default all three, nominal strides
            8/16/32) or pyramid levels (``'pyramid'``, default all four); ``'cls_token'`` returns
            the last stage's tokens only.
        drop_rate, attn_drop_rate: dropout after the position embedding, projections and MLPs,
            and on attention weights.
        drop_path_rate: stochastic depth; block ``i`` of ``N`` gets ``drop_path_rate * i / N``.
        frozen_stages: ``0`` freezes the stem (patch embedding, position embedding, tokens),
            ``k`` also the first ``k`` stages (each with its opening pooling layer), ``3`` also the
            token norm. The pyramid's transposed conv is never frozen.
        norm_eval, with_cp, init_cfg: see :class:`VitBackbone`.

    Example:
        >>> import torch
        >>> from vitzoo.models import PiT
        >>> model = PiT(arch='s', out_type='featmap').eval()
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 224, 224))]
        [(1, 144, 27, 27), (1, 288, 14, 14), (1, 576, 7, 7)]
        >>> model = PiT(arch='s', out_type='pyramid').eval()
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 224, 224))]
        [(1, 144, 56, 56), (1, 144, 28, 28), (1, 288, 14, 14), (1, 576, 7, 7)]
    """
    arch_zoo = {
        'ti': dict(base_dims=[32, 32, 32], depths=[2, 6, 4], num_heads=[2, 4, 8], patch_size=16, stride=8),
        'xs': dict(base_dims=[48, 48, 48], depths=[2, 6, 4], num_heads=[2, 4, 8], patch_size=16, stride=8),
        's': dict(base_dims=[48, 48, 48], depths=[2, 6, 4], num_heads=[3, 6, 12], patch_size=16, stride=8),
        'b': dict(base_dims=[64, 64, 64], depths=[3, 6, 4], num_heads=[4, 8, 16], patch_size=14, stride=7),
    }
    arch_aliases = {'tiny': 'ti', 'xsmall': 'xs', 'small': 's', 'base': 'b'}
    essential_keys = ('base_dims', 'depths', 'num_heads', 'patch_size', 'stride')
    optional_keys = ('mlp_ratio', )
    stage_keys = ('base_dims', 'depths', 'num_heads')
    drop_path_reaches_rate = False  # the official rule: block i of N gets drop_path_rate * i / N
    out_types = ('cls_token', 'featmap', 'pyramid')

    paper = 'PiT'
    flops_note = 'with the attention matmuls, as the PiT paper counts'
    timm_names = {'ti': 'pit_ti_224', 'xs': 'pit_xs_224', 's': 'pit_s_224', 'b': 'pit_b_224'}
    distilled_timm_names = {'ti': 'pit_ti_distilled_224', 'xs': 'pit_xs_distilled_224',
                            's': 'pit_s_distilled_224', 'b': 'pit_b_distilled_224'}
    builds_for_input_size = True
    pretrained_missing_ok = (r'pyramid\.', )
    no_weight_decay_keys = ('.pos_embed', '.cls_token')  # DeiT's recipe, behind the released weights
    dense_output_options = dict(out_type='pyramid')

    def __init__(self,
                 arch: Union[str, dict] = 's',
                 distilled: bool = False,
                 img_size: Union[int, Sequence[int]] = 224,
                 in_channels: int = 3,
                 out_type: str = 'featmap',
                 out_indices: Optional[Sequence[int]] = None,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(arch, out_indices, drop_path_rate, frozen_stages, norm_eval, with_cp, init_cfg,
                         dropout_rates=dict(drop_rate=drop_rate, attn_drop_rate=attn_drop_rate),
                         output_options=dict(out_type=out_type))
        check_flag('distilled', distilled)
        arch = self.arch_settings
        dims = self.stage_dims(arch)
        self.embed_dims = dims
        self.distilled = distilled
        self.num_tokens = 2 if distilled else 1
        self.out_type = out_type

        patch_size, stride = arch['patch_size'], arch['stride']
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if len(img_size) != 2 or not all(isinstance(s, int) and s >= patch_size for s in img_size):
            raise ValueError(f'PiT img_size must be an int or (H, W), at least the patch size {patch_size}, '
                             f'got {img_size}')
        grid = tuple((s - patch_size) // stride + 1 for s in img_size)
        self.patch_embed = PatchEmbed(in_channels, dims[0], kernel_size=patch_size, stride=stride)
        self.pos_embed = nn.Parameter(torch.zeros(1, dims[0], *grid))
        self.cls_token = nn.Parameter(torch.zeros(1, self.num_tokens, dims[0]))
        self.pos_drop = nn.Dropout(drop_rate)

        stages = []
        for i, rates in enumerate(self.drop_path_rates):
            blocks = [
                vit_block(dims[i], arch['num_heads'][i], mlp_ratio=arch.get('mlp_ratio', 4.), drop=drop_rate,
                          attn_drop=attn_drop_rate, drop_path=rate)
                for rate in rates
            ]
            stages.append(PiTStage(blocks, Pooling(dims[i - 1], dims[i]) if i > 0 else None))
        self.stages = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6) if out_type == 'cls_token' else nn.Identity()
        if out_type == 'pyramid':
            self.pyramid = SimplePyramid(dims)

        nn.init.trunc_normal_(self.pos_embed, std=.02)
        nn.init.trunc_normal_(self.cls_token, std=.02)
        self._freeze_stages()

    @staticmethod
    def stage_dims(arch: dict) -> List[int]:
        """Stage widths: ``base_dims[i] * num_heads[i]``."""
        return [d * h for d, h in zip(arch['base_dims'], arch['num_heads'])]

    @classmethod
    def output_layout(cls, arch: dict, out_type: str = 'featmap', **_) -> List[Tuple[int, Optional[int]]]:
        """Stage maps at nominal strides 8/16/32, pyramid levels at 4/8/16/32, or class tokens (no stride)."""
        if out_type not in cls.out_types:
            raise ValueError(f'PiT out_type must be one of {cls.out_types}, got {out_type!r}')
        dims = cls.stage_dims(arch)
        if out_type == 'pyramid':
            if len(dims) != len(PYRAMID_STRIDES) - 1:
                raise ValueError(f"PiT out_type='pyramid' needs an arch of {len(PYRAMID_STRIDES) - 1} stages, "
                                 f'got {len(dims)}')
            return list(zip([dims[0]] + dims, PYRAMID_STRIDES))
        if out_type == 'featmap':
            return [(dim, 8 * 2**i) for i, dim in enumerate(dims)]
        return [(dim, None) for dim in dims]

    @classmethod
    def select_outputs(cls, arch: dict, out_indices: Optional[Sequence[int]] = None, out_type: str = 'featmap',
                       **output_options) -> Tuple[List[int], Tuple[int, ...], Tuple[Optional[int], ...]]:
        """``'cls_token'`` returns the last stage's tokens only."""
        selected = super().select_outputs(arch, out_indices, out_type=out_type, **output_options)
        if out_type == 'cls_token':
            last = len(arch['depths']) - 1
            if out_indices is not None and selected[0] != [last]:
                raise ValueError(f"PiT out_type='cls_token' returns the last stage only, got out_indices={out_indices}")
            return super().select_outputs(arch, last, out_type=out_type)
        return selected

    @classmethod
    def timm_name(cls, arch: Optional[Union[str, dict]] = None, distilled: bool = False, **kwargs) -> Optional[str]:
        name = cls.zoo_name(arch)
        return (cls.distilled_timm_names if distilled else cls.timm_names).get(name) if name else None

    @property
    def pretrained_unexpected_ok(self) -> Tuple[str, ...]:
        """The classifiers' final token norm, which dense outputs do not have."""
        return () if self.out_type == 'cls_token' else (r'norm\.', )

    def stem_modules(self) -> List[nn.Module]:
        return [self.patch_embed, self.pos_drop]

    def stem_parameters(self) -> List[nn.Parameter]:
        return [self.pos_embed, self.cls_token]

    def frozen_modules(self) -> List[nn.Module]:
        modules = super().frozen_modules()
        if self.frozen_stages == len(self.stages):
            modules.append(self.norm)
        return modules

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Resize a checkpoint's position embedding to this model's grid before loading it."""
        key = prefix + 'pos_embed'
        if key in state_dict and state_dict[key].dim() == 4:
            state_dict[key] = resize_pos_embed(state_dict[key], self.pos_embed.shape[-2:])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward_stages(self, x: torch.Tensor,
                       num_stages: Optional[int] = None) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Maps (NCHW) of the first ``num_stages`` stages and their class tokens, not normalised."""
        x, size = self.patch_embed(x)
        x = self.pos_drop(x + nchw_to_nlc(resize_pos_embed(self.pos_embed, size)))
        tokens = self.cls_token.expand(x.shape[0], -1, -1)
        maps = []
        for stage in self.stages[:num_stages]:
            x, tokens, size = stage(x, tokens, size, with_cp=self.with_cp)
            maps.append(nlc_to_nchw(x, size))
        return maps, tokens

    def forward(self, x: torch.Tensor) -> tuple:
        if self.out_type == 'cls_token':
            tokens = self.norm(self.forward_stages(x)[1])
            return ((tokens[:, 0], tokens[:, 1]), ) if self.distilled else (tokens[:, 0], )
        if self.out_type == 'featmap':
            maps = self.forward_stages(x, self.out_indices[-1] + 1)[0]
            return tuple(maps[i].contiguous() for i in self.out_indices)
        maps = self.forward_stages(x, max(self.out_indices[-1] - 1, 0) + 1)[0]
        levels = self.pyramid(maps, x.shape[-2:])
        return tuple(levels[i].contiguous() for i in self.out_indices)


def _pool_to_stage(match) -> str:
    return f'backbone.stages.{int(match.group(1)) + 1}.pool.'


# Official (pooling layers under ``pools.N``) and timm (``transformers.N+1.pool``) classifiers ->
# vitzoo's classifier layout.
_RULES = [
    (r'^(pos_embed|cls_token)$', r'backbone.\1'),
    (r'^patch_embed\.conv\.', 'backbone.patch_embed.proj.'),
    (r'^transformers\.(\d+)\.blocks\.', r'backbone.stages.\1.blocks.'),
    (r'^transformers\.(\d+)\.pool\.', r'backbone.stages.\1.pool.'),
    (r'^pools\.(\d+)\.', _pool_to_stage),
    (r'^norm\.', 'backbone.norm.'),
    (r'^head\.', 'head.fc.'),
    (r'^head_dist\.', 'head.fc_dist.'),
]


@register_converter('pit')
def convert_pit(state_dict: Mapping[str, torch.Tensor]) -> Optional[OrderedDict]:
    """Official or timm PiT state dict -> vitzoo layout; None for other layouts."""
    keys = set(state_dict)
    if not ({'pos_embed', 'cls_token', 'patch_embed.conv.weight'} <= keys
            and any(k.startswith('transformers.0.blocks.') for k in keys)):
        return None
    return rename_keys(state_dict, _RULES, 'official' if any(k.startswith('pools.') for k in keys) else 'timm')
