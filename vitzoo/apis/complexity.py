"""Parameters and FLOPs of any vitzoo config, under each paper's convention.

One counter for every family: a ``TorchDispatchMode`` that applies PyTorch's FLOP formulas
(``torch.utils.flop_counter``) to every convolution, matrix multiplication and fused attention
call, and reports multiply-accumulates (MACs = FLOPs / 2; the papers call MACs "FLOPs").
Element-wise operations, normalisation, softmax and pooling are not counted.

A matrix multiplication whose operands are both activations (``q @ k^T`` and ``attn @ v``, or a
fused ``scaled_dot_product_attention``) is an *attention matmul*; one with a parameter operand
(linear layers, LVT's per-position value transform) is not. The papers differ on the former
(Twins leaves them out, DaViT, PiT and LVT count them); each backbone class declares its paper's
convention (``VitBackbone.paper_flops_count_attention``). ``attn_matmuls='auto'`` follows the
model's backbone; ``'include'`` / ``'exclude'`` force one convention.
"""
from collections import Counter
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, sdpa_flop

__all__ = [
    'Complexity', 'count_macs', 'get_model_complexity', 'default_input_shape', 'measured_input_shape',
    'paper_includes_attention'
]

aten = torch.ops.aten

_FORMULAS = dict(flop_registry)
# The CPU flash kernel behind F.scaled_dot_product_attention has no formula upstream.
_FORMULAS[aten._scaled_dot_product_flash_attention_for_cpu] = sdpa_flop
_MATMULS = {aten.mm, aten.addmm, aten.bmm, aten.baddbmm}
_SDPA = {
    aten._scaled_dot_product_flash_attention_for_cpu, aten._scaled_dot_product_efficient_attention,
    aten._scaled_dot_product_flash_attention, aten._scaled_dot_product_cudnn_attention,
    aten._flash_attention_forward, aten._efficient_attention_forward
}

class _MacCounter(TorchDispatchMode):
    """Counts MACs per op, split into attention matmuls and the rest."""

    def __init__(self, weight_storages):
        super().__init__()
        self.weight_storages = weight_storages
        self.attention = Counter()
        self.other = Counter()

    def _is_attention(self, packet, args) -> bool:
        if packet in _SDPA:
            return True
        if packet in _MATMULS:
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            return not any(t.untyped_storage().data_ptr() in self.weight_storages for t in tensors)
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func._overloadpacket
        if packet not in _FORMULAS and func is not torch.ops.prim.device.default:
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        if packet in _FORMULAS:
            macs = _FORMULAS[packet](*args, **kwargs, out_val=out) // 2
            bucket = self.attention if self._is_attention(packet, args) else self.other
            bucket[str(packet).split('.')[-1]] += macs
        return out


def _attention_flags(model: nn.Module):
    return {m: m.fused_attn for m in model.modules() if hasattr(m, 'fused_attn')}


def count_macs(model: nn.Module, forward, *args, **kwargs) -> Tuple[int, int]:
    """``(macs without attention matmuls, attention-matmul macs)`` of ``forward(*args, **kwargs)``.

    Runs once under ``torch.no_grad`` with the eager attention path (every vitzoo attention
    layer's ``fused_attn`` off, restored afterwards), so that the count does not depend on which
    SDPA kernel the device would pick.
    """
    flags = _attention_flags(model)
    for module in flags:
        module.fused_attn = False
    storages = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    try:
        with torch.no_grad(), _MacCounter(storages) as counter:
            forward(*args, **kwargs)
    finally:
        for module, flag in flags.items():
            module.fused_attn = flag
    return sum(counter.other.values()), sum(counter.attention.values())


def paper_includes_attention(model: nn.Module) -> Tuple[bool, str]:
    """``(whether the family's paper counts attention matmuls, the paper's name)``, as the model's
    vitzoo backbone declares them; ``(True, class name)`` for other models."""
    from vitzoo.models.backbones import VitBackbone
    backbone = getattr(model, 'backbone', None)
    modules = [backbone] if isinstance(backbone, nn.Module) else list(model.modules())
    for module in modules:
        if isinstance(module, VitBackbone):
            return module.paper_flops_count_attention, module.paper
    name = type(backbone).__name__ if isinstance(backbone, nn.Module) else type(model).__name__
    return True, name


@dataclass
class Complexity:
    params: int
    macs_without_attention: int
    attention_macs: int
    include_attention: bool
    family: str
    input_shape: Tuple[int, int]

    @property
    def macs(self) -> int:
        """MACs under the chosen convention (what the index calls FLOPs)."""
        return self.macs_without_attention + (self.attention_macs if self.include_attention else 0)

    @property
    def convention(self) -> str:
        return ('attention matmuls (q@k^T, attn@v) included' if self.include_attention else
                'attention matmuls (q@k^T, attn@v) excluded')


def _first(pipeline, types, key):
    for t in pipeline or []:
        if str(t.get('type', '')).split('.')[-1] in types and t.get(key) is not None:
            return t[key]
    return None


def _hw(value) -> Tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


def default_input_shape(cfg) -> Tuple[int, int]:
    """The (H, W) the model sees at test time according to its config."""
    from .model import task_scope
    scope = task_scope(cfg)
    test = cfg.get('test_pipeline') or (cfg.get('test_dataloader') or {}).get('dataset', {}).get('pipeline')
    train = cfg.get('train_pipeline') or (cfg.get('train_dataloader') or {}).get('dataset', {}).get('pipeline')
    if scope == 'mmdet':
        scale = _first(test, ('Resize', ), 'scale')
        w, h = _hw(scale) if scale is not None else (1333, 800)
        return (min(w, h), max(w, h))  # mmdet scales are (long, short) with keep_ratio: landscape 800x1333
    if scope == 'mmseg':
        crop = cfg.get('crop_size') or _first(train, ('RandomCrop', ), 'crop_size')
        return _hw(crop) if crop is not None else (512, 512)
    crop = _first(test, ('CenterCrop', ), 'crop_size')
    if crop is None:
        crop = _first(test, ('Resize', ), 'scale')
    if crop is None:
        crop = _first(train, ('RandomResizedCrop', 'RandomCrop'), 'scale') or \
            _first(train, ('RandomCrop', ), 'crop_size')
    if crop is None:
        return 224, 224
    w, h = _hw(crop)  # mmpretrain sizes are (w, h)
    return h, w


def measured_input_shape(cfg, shape: Optional[Tuple[int, int]] = None) -> Tuple[int, int]:
    """The (H, W) counted: ``shape`` or the config's test size, padded as mmdet's preprocessor pads."""
    from .model import task_scope
    h, w = shape or default_input_shape(cfg)
    if task_scope(cfg) == 'mmdet':
        divisor = (cfg.model.get('data_preprocessor') or {}).get('pad_size_divisor', 1) or 1
        h, w = -(-h // divisor) * divisor, -(-w // divisor) * divisor
    return h, w


def _det_forward(model, inputs):
    """mmdet's tensor forward with 1000 fixed proposals for two-stage models (mmdet's dummy forward)."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    h, w = inputs.shape[-2:]
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                scale_factor=(1., 1.), img_id=0)
    sample = DetDataSample(metainfo=meta)
    if hasattr(model, 'rpn_head'):
        generator = torch.Generator().manual_seed(0)
        xy = torch.rand(1000, 2, generator=generator) * torch.tensor([w, h]) * 0.8
        wh = torch.rand(1000, 2, generator=generator) * torch.tensor([w, h]) * 0.2 + 8
        sample.proposals = InstanceData(bboxes=torch.cat([xy, xy + wh], dim=1))
    return model._forward(inputs, [sample])


def get_model_complexity(model_or_cfg, shape: Optional[Tuple[int, int]] = None,
                         attn_matmuls: str = 'auto') -> Complexity:
    """Parameters and MACs of a model name, config or built model for a 1x3xHxW input.

    ``shape`` defaults to the config's test size (224 for ImageNet, the crop size for
    segmentation, 800x1333 padded to the model's size divisor for detection).
    """
    from mmengine.registry import DefaultScope

    from .model import build_model_from_cfg, load_config, task_scope
    if attn_matmuls not in ('auto', 'include', 'exclude'):
        raise ValueError(f"attn_matmuls must be 'auto', 'include' or 'exclude', got {attn_matmuls!r}")
    if isinstance(model_or_cfg, nn.Module):
        model, cfg = model_or_cfg, model_or_cfg.cfg
    else:
        cfg, _ = load_config(model_or_cfg)
        model = build_model_from_cfg(cfg)
    model.eval()
    scope = task_scope(cfg)
    h, w = measured_input_shape(cfg, shape)
    inputs = torch.randn(1, 3, h, w)
    with DefaultScope.overwrite_default_scope(scope):
        if scope == 'mmdet':
            other, attention = count_macs(model, _det_forward, model, inputs)
        else:
            other, attention = count_macs(model, model, inputs, mode='tensor')
    include, family = paper_includes_attention(model)
    if attn_matmuls != 'auto':
        include = attn_matmuls == 'include'
    params = sum(p.numel() for p in model.parameters())
    return Complexity(params, other, attention, include, family, (h, w))
