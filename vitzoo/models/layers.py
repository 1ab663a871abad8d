"""Layers shared by every vitzoo backbone.

Attention goes through :func:`scaled_dot_product_attention`, which calls
``torch.nn.functional.scaled_dot_product_attention`` (fused kernels) or an eager
reference implementation. The default comes from the environment variable
``VITZOO_FUSED_ATTN`` (``1`` by default); :func:`set_fused_attn` switches a built model.
Windowed attention is always reshaped to 4-D ``(batch * windows, heads, tokens, head_dim)``
before the call: PyTorch's fused kernels reject 5-D inputs and silently fall back.

Linear layers are :class:`~vitzoo.models.linear.Linear` (an ``nn.Linear`` with the same parameters
and state-dict keys) whose CPU fp32 products run on the kernel measured faster on the machine,
oneDNN's or ATen's (:mod:`vitzoo.models.linear`); ``VITZOO_ONEDNN_LINEAR`` or
:func:`set_onednn_linear` sets how.

Sizes are written so that ``torch.export`` keeps them symbolic (``vitzoo.deploy``): steps that
depend on a size (padding, cropping, resizing) are skipped only where :func:`known_zero` proves
them no-ops, which eager ints always decide; under export they stay in the graph for any size.
"""
import functools
import os
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.symbolic_shapes import statically_known_true

from .linear import Linear, linear, mlp, onednn_linear, set_onednn_linear, use_onednn_linear

__all__ = [
    'linear', 'Linear', 'use_onednn_linear', 'set_onednn_linear', 'onednn_linear',
    'use_fused_attn', 'set_fused_attn', 'scaled_dot_product_attention', 'drop_path', 'add_drop_path', 'DropPath',
    'Mlp', 'ConvMlp', 'PatchEmbed', 'PosConv', 'Attention', 'SpatialReductionAttention',
    'WindowAttention', 'window_partition', 'window_reverse', 'pad_to_multiple', 'to_2tuple',
    'nlc_to_nchw', 'nchw_to_nlc', 'Block', 'known_zero'
]

Size = Tuple[int, int]

_USE_FUSED_ATTN = os.environ.get('VITZOO_FUSED_ATTN', '1') != '0'


def use_fused_attn() -> bool:
    """Whether attention layers built now use the fused SDPA kernels."""
    return _USE_FUSED_ATTN


def set_fused_attn(model: nn.Module, enabled: bool) -> nn.Module:
    """Switch every attention layer of ``model`` between fused SDPA and the eager path."""
    for module in model.modules():
        if hasattr(module, 'fused_attn'):
            module.fused_attn = enabled
    return model


def scaled_dot_product_attention(q: torch.Tensor,
                                 k: torch.Tensor,
                                 v: torch.Tensor,
                                 attn_mask: Optional[torch.Tensor] = None,
                                 dropout_p: float = 0.,
                                 scale: Optional[float] = None,
                                 fused: bool = True) -> torch.Tensor:
    """``softmax(q @ k^T * scale + mask) @ v`` on 4-D ``(B, heads, L, D)`` tensors.

    ``attn_mask`` follows the SDPA convention: a boolean mask is True where attention is
    allowed, a float mask is added to the logits.
    """
    if fused:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale)
    scale = q.size(-1)**-0.5 if scale is None else scale
    attn = (q * scale) @ k.transpose(-2, -1)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn = attn.masked_fill(~attn_mask, float('-inf'))
        else:
            attn = attn + attn_mask
    attn = attn.softmax(dim=-1)
    if dropout_p > 0.:
        attn = F.dropout(attn, p=dropout_p)
    return attn @ v


def to_2tuple(x) -> Tuple[int, int]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


def drop_path(x: torch.Tensor, drop_prob: float = 0., training: bool = False) -> torch.Tensor:
    """Stochastic depth per sample (https://arxiv.org/abs/1603.09382)."""
    if drop_prob == 0. or not training:
        return x
    if drop_prob == 1.:
        return torch.zeros_like(x)
    return x * _keep_mask(x, drop_prob)


def _keep_mask(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Per-sample ``1 / keep_prob`` or 0, shaped to broadcast over ``x``."""
    keep_prob = 1 - drop_prob
    shape = (x.shape[0], ) + (1, ) * (x.ndim - 1)
    return x.new_empty(shape).bernoulli_(keep_prob).div_(keep_prob)


def add_drop_path(residual: torch.Tensor, x: torch.Tensor, drop_prob: float = 0.,
                  training: bool = False) -> torch.Tensor:
    """``residual + drop_path(x)``, in one pass over memory (``addcmul``) when samples are dropped."""
    if drop_prob == 0. or not training:
        return residual + x
    if drop_prob == 1.:
        return residual + torch.zeros_like(x)
    return torch.addcmul(residual, x, _keep_mask(x, drop_prob))


class DropPath(nn.Module):
    """Stochastic depth on the residual branch."""

    def __init__(self, drop_prob: float = 0.):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def add(self, residual: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``residual + self(x)`` in one pass (:func:`add_drop_path`)."""
        return add_drop_path(residual, x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob:.3f}'


def known_zero(*sizes) -> bool:
    """Whether every size is 0: decided for ints; for torch.export's symbolic sizes only where provable."""
    return all(statically_known_true(size == 0) for size in sizes)


def nlc_to_nchw(x: torch.Tensor, size: Size) -> torch.Tensor:
    """(B, H*W, C) tokens to a (B, C, H, W) map.

    Eager: a view with channels-last strides. Under torch.export: a contiguous copy, because the
    layout checks of later convolutions and views on channels-last strides would pin the batch
    size and the map sizes (guards such as ``batch != 1``).
    """
    B, _, C = x.shape
    if torch.compiler.is_exporting():
        return x.transpose(1, 2).clone(memory_format=torch.contiguous_format).view(B, C, size[0], size[1])
    return x.transpose(1, 2).reshape(B, C, size[0], size[1])


def nchw_to_nlc(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) map to (B, H*W, C) tokens."""
    return x.flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    """Transformer MLP on tokens: ``fc1 -> act -> drop -> fc2 -> drop``."""

    def __init__(self,
                 in_features: int,
                 hidden_features: Optional[int] = None,
                 out_features: Optional[int] = None,
                 act_layer: Callable[..., nn.Module] = nn.GELU,
                 bias: bool = True,
                 drop: float = 0.):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.fc2 = Linear(hidden_features, out_features, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, size: Optional[Size] = None) -> torch.Tensor:
        """(B, N, C) tokens -> (B, N, out_features); ``size`` (the token grid) is not needed."""
        if self.fused:
            return mlp(x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))

    @property
    def fused(self) -> bool:
        """Whether the MLP runs as one :func:`~vitzoo.models.linear.mlp` call (GELU in place or inside
        oneDNN's kernel without autograd, one autograd node with it).

        Only for the plain modules built here (an exact GELU, :class:`Linear` layers, no active dropout)
        without hooks: a replaced layer (an adapter, a quantised layer) or a hook must still see its call.
        """
        return (type(self.act) is nn.GELU and self.act.approximate == 'none' and type(self.fc1) is Linear
                and type(self.fc2) is Linear and (self.drop.p == 0 or not self.training)
                and not any(m._forward_hooks or m._forward_pre_hooks
                            for m in (self.fc1, self.act, self.fc2, self.drop)))


class ConvMlp(nn.Module):
    """MLP with a depthwise 3x3 conv between the two 1x1 convs, on the tokens of an H x W map.

    ``fc1 (1x1) -> depthwise 3x3 -> act -> drop -> fc2 (1x1) -> drop``, as in PVTv2 and LVT.
    """

    def __init__(self,
                 in_features: int,
                 hidden_features: Optional[int] = None,
                 out_features: Optional[int] = None,
                 act_layer: Callable[..., nn.Module] = nn.GELU,
                 drop: float = 0.):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Conv2d(in_features, hidden_features, 1)
        self.dwconv = nn.Conv2d(hidden_features, hidden_features, 3, padding=1, groups=hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(hidden_features, out_features, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, size: Size) -> torch.Tensor:
        """(B, H*W, C) tokens of a ``size`` map -> (B, H*W, out_features)."""
        x = self.drop(self.act(self.dwconv(self.fc1(nlc_to_nchw(x, size)))))
        return nchw_to_nlc(self.drop(self.fc2(x)))


def pad_to_multiple(x: torch.Tensor, multiple: int, channels_last: bool = False) -> torch.Tensor:
    """Zero-pad the right and bottom of an NCHW (or NHWC) tensor to multiples of ``multiple``."""
    H, W = (x.shape[1], x.shape[2]) if channels_last else (x.shape[-2], x.shape[-1])
    # ceil(H / multiple) * multiple - H: the padded size is a product torch.export can divide
    pad_b = (H + multiple - 1) // multiple * multiple - H
    pad_r = (W + multiple - 1) // multiple * multiple - W
    if known_zero(pad_b, pad_r):
        return x
    if channels_last:
        return F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    return F.pad(x, (0, pad_r, 0, pad_b))


class PatchEmbed(nn.Module):
    """Conv patch embedding: (B, C_in, H, W) -> tokens (B, H'*W', C) and their grid size.

    Args:
        in_chans: input channels.
        embed_dim: output channels.
        kernel_size, stride, padding: of the projection conv.
        norm_layer: optional norm on the tokens (after the conv, or before it with ``norm_first``).
        norm_first: normalise the *input* channels before the conv (DaViT downsampling).
        pad_to_stride: zero-pad right/bottom to a multiple of ``stride`` first, so no pixel is dropped.
    """

    def __init__(self,
                 in_chans: int,
                 embed_dim: int,
                 kernel_size: int,
                 stride: int,
                 padding: int = 0,
                 norm_layer: Optional[Callable[[int], nn.Module]] = None,
                 norm_first: bool = False,
                 pad_to_stride: bool = False):
        super().__init__()
        self.stride = stride
        self.norm_first = norm_first
        self.pad_to_stride = pad_to_stride
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size, stride, padding)
        if norm_layer is None:
            self.norm = nn.Identity()
        else:
            self.norm = norm_layer(in_chans if norm_first else embed_dim)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Size]:
        if self.norm_first:
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        if self.pad_to_stride:
            x = pad_to_multiple(x, self.stride)
        x = self.proj(x)
        size = (x.shape[2], x.shape[3])
        x = nchw_to_nlc(x)
        if not self.norm_first:
            x = self.norm(x)
        return x, size


class PosConv(nn.Module):
    """Conditional positional encoding: ``x + depthwise_conv3x3(x)`` on tokens (PEG / CPE)."""

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, kernel_size, 1, kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor, size: Size) -> torch.Tensor:
        return x + nchw_to_nlc(self.proj(nlc_to_nchw(x, size)))


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection, on (B, N, C) tokens."""

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f'dim ({dim}) must be divisible by num_heads ({num_heads})')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.fused_attn = use_fused_attn()
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def attend(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attention of (B, N, C) tokens over themselves, before the output projection."""
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop if self.training else 0.,
            fused=self.fused_attn)
        return x.transpose(1, 2).reshape(B, N, C)

    def forward(self, x: torch.Tensor, size: Optional[Size] = None) -> torch.Tensor:
        """(B, N, C) tokens -> (B, N, C); ``size`` (the token grid) is not needed."""
        return self.proj_drop(self.proj(self.attend(x)))


class Block(nn.Module):
    """Pre-norm transformer block on (B, N, C) tokens around any attention and MLP.

    ``x = x + drop_path(attn(norm1(x), size))``, then ``x = x + drop_path(mlp(norm2(x), size))``,
    with LayerNorms of ``norm_eps``. ``attn`` and ``mlp`` take the tokens and their grid size
    (``None`` for token sequences that are no map); most ignore the size. Every family builds its
    blocks from this class with its own attention (ViT's :class:`Attention`, Twins' windowed and
    sub-sampled attention, LVT's CSA and RASA) and MLP (:class:`Mlp`, :class:`ConvMlp`).
    """

    def __init__(self, dim: int, attn: nn.Module, mlp: nn.Module, drop_path: float = 0., norm_eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = attn
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = mlp

    def forward(self, x: torch.Tensor, size: Optional[Size] = None) -> torch.Tensor:
        x = self.drop_path.add(x, self.attn(self.norm1(x), size))
        return self.drop_path.add(x, self.mlp(self.norm2(x), size))


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of ``window_size`` -> (B * nW, ws * ws, C)."""
    B, H, W, C = x.shape
    x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
    # an explicit copy: reshape's view-or-copy decision would pin the window counts under torch.export
    x = x.permute(0, 1, 3, 2, 4, 5).clone(memory_format=torch.contiguous_format)
    return x.view(-1, window_size * window_size, C)


def window_reverse(windows: torch.Tensor, window_size: int, H: int, W: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, ws * ws, C) -> (B, H, W, C)."""
    C = windows.shape[-1]
    x = windows.view(-1, H // window_size, W // window_size, window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).clone(memory_format=torch.contiguous_format).view(-1, H, W, C)


@functools.lru_cache(maxsize=16)
def window_padding_mask(H: int, W: int, window_size: int, device: torch.device) -> torch.Tensor:
    """Boolean (nW, 1, 1, ws*ws) key mask of an H x W map padded to whole windows, True on real tokens.

    Cached: every block of a stage sees the same map size, so the mask is built once per size.
    """
    valid = torch.ones(1, H, W, 1, dtype=torch.bool, device=device)
    valid = pad_to_multiple(valid, window_size, channels_last=True)
    return window_partition(valid, window_size).reshape(-1, 1, 1, window_size * window_size)


class WindowAttention(Attention):
    """Self-attention inside non-overlapping ``window_size`` x ``window_size`` windows.

    Maps whose sides are not multiples of the window are zero-padded on the right and bottom
    and cropped afterwards. With ``mask_padding=False`` (the default, as in the official
    Twins/DaViT classification and detection code and in timm) the padded positions take part
    as keys and values; they hold zeros, so their keys and values equal the projection biases.
    With ``mask_padding=True`` they are excluded from every real token's attention (the intent
    of the official Twins segmentation code, without its one-sided-padding bug).
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 window_size: int = 7,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.,
                 mask_padding: bool = False):
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.window_size = window_size
        self.mask_padding = mask_padding

    def padding_mask(self, H: int, W: int, device: torch.device) -> Optional[torch.Tensor]:
        """Boolean (nW, 1, 1, ws*ws) key mask, True on real tokens, or None without padding."""
        ws = self.window_size
        if not self.mask_padding or known_zero(H % ws, W % ws):
            return None
        if torch.compiler.is_exporting():  # symbolic sizes: no cache key
            return window_padding_mask.__wrapped__(H, W, ws, device)
        return window_padding_mask(H, W, ws, device)

    def forward(self, x: torch.Tensor, size: Size) -> torch.Tensor:
        B, N, C = x.shape
        H, W = size
        ws = self.window_size
        x = pad_to_multiple(x.view(B, H, W, C), ws, channels_last=True)
        Hp, Wp = x.shape[1], x.shape[2]
        windows = window_partition(x, ws)
        mask = self.padding_mask(H, W, x.device)
        if mask is not None:
            mask = mask.repeat(B, 1, 1, 1)
        windows = self.attend(windows, mask)
        x = window_reverse(windows, ws, Hp, Wp)
        if not known_zero(Hp - H, Wp - W):  # crop: a negative pad has the output size H x W exactly
            x = F.pad(x, (0, 0, 0, W - Wp, 0, H - Hp))
        return self.proj_drop(self.proj(x.reshape(B, N, C)))


class SpatialReductionAttention(nn.Module):
    """Attention whose keys and values come from a map reduced by a strided conv (PVT's SRA).

    Queries come from every token; with ``sr_ratio > 1`` keys and values come from
    ``norm(conv_{k=s=sr}(x))``. Used as Twins' global sub-sampled attention and as the core of
    LVT's recursive atrous self-attention (which transforms the queries, see
    :meth:`project_query`).
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 sr_ratio: int = 1,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.,
                 norm_layer: Callable[[int], nn.Module] = nn.LayerNorm):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f'dim ({dim}) must be divisible by num_heads ({num_heads})')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.fused_attn = use_fused_attn()
        self.q = Linear(dim, dim, bias=qkv_bias)
        self.kv = Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = norm_layer(dim)

    def project_query(self, x: torch.Tensor, size: Optional[Size]) -> torch.Tensor:
        """(B, N, C) tokens -> (B, Nq, C) queries (Nq = N here; subclasses may pick fewer)."""
        return self.q(x)

    def forward(self, x: torch.Tensor, size: Optional[Size] = None) -> torch.Tensor:
        """(B, N, C) tokens of a ``size`` map (needed when ``sr_ratio > 1``) -> (B, Nq, C)."""
        B, N, C = x.shape
        q = self.project_query(x, size)
        q = q.reshape(B, q.shape[1], self.num_heads, self.head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            x = self.norm(nchw_to_nlc(self.sr(nlc_to_nchw(x, size))))
        kv = self.kv(x).reshape(B, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        x = scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0., fused=self.fused_attn)
        x = x.transpose(1, 2).reshape(B, -1, C)
        return self.proj_drop(self.proj(x))
