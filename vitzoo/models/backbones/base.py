"""The OpenMMLab contract shared by every vitzoo backbone."""
import math
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmengine.model import BaseModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from ..checkpoint import LoadReport, init_weights_with_pretrained, load_pretrained


def resolve_arch(arch: Union[str, dict], arch_zoo: Dict[str, dict], essential_keys: Sequence[str],
                 family: str) -> dict:
    """Look up ``arch`` in a variant table, or validate a custom arch dict."""
    if isinstance(arch, str):
        if arch.lower() not in arch_zoo:
            raise ValueError(f'unknown {family} arch {arch!r}; choose one of {sorted(arch_zoo)} '
                             f'or pass a dict with the keys {sorted(essential_keys)}')
        return dict(arch_zoo[arch.lower()])
    if not isinstance(arch, dict):
        raise TypeError(f'{family} arch must be a name or a dict, got {type(arch).__name__}')
    missing = set(essential_keys) - set(arch)
    if missing:
        raise ValueError(f'custom {family} arch is missing the keys {sorted(missing)}; '
                         f'a custom arch needs {sorted(essential_keys)}')
    return dict(arch)


def normalize_indices(indices: Union[int, Sequence[int]], num_stages: int, what: str) -> List[int]:
    """Turn (possibly negative) stage indices into sorted non-negative ones, checking the range."""
    if isinstance(indices, int):
        indices = [indices]
    out = []
    for index in indices:
        if not -num_stages <= index < num_stages:
            raise ValueError(f'{what} {index} is out of range for {num_stages} stages '
                             f'(allowed: {-num_stages}..{num_stages - 1})')
        out.append(index % num_stages)
    return sorted(set(out))


def build_out_norms(embed_dims: Sequence[int], norm_after_stage: Union[bool, Sequence[bool]],
                    eps: float = 1e-5) -> nn.ModuleList:
    """One LayerNorm (or Identity) per stage output; ``norm_after_stage`` is one bool or one per stage."""
    if isinstance(norm_after_stage, bool):
        norm_after_stage = [norm_after_stage] * len(embed_dims)
    if len(norm_after_stage) != len(embed_dims):
        raise ValueError(f'norm_after_stage needs one bool per stage ({len(embed_dims)}), got {norm_after_stage}')
    return nn.ModuleList(
        nn.LayerNorm(dim, eps=eps) if flag else nn.Identity() for dim, flag in zip(embed_dims, norm_after_stage))


def init_vit_weights(m: nn.Module, conv_fan_out: bool = True) -> None:
    """Trunc-normal(0.02) linears, unit LayerNorms and, with ``conv_fan_out``, normal(0, sqrt(2/fan_out)) convs."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d) and conv_fan_out:
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, *args, with_cp: bool = False) -> torch.Tensor:
    """Run ``x`` through ``blocks``, with activation checkpointing when training with ``with_cp``."""
    for block in blocks:
        if with_cp and x.requires_grad:
            x = checkpoint(block, x, *args, use_reentrant=False)
        else:
            x = block(x, *args)
    return x


class EmbedStage(nn.Module):
    """A patch embedding (the stem or a downsampling layer) followed by blocks taking ``(x, size)``."""

    def __init__(self, patch_embed: nn.Module, blocks: Sequence[nn.Module]):
        super().__init__()
        self.patch_embed = patch_embed
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, with_cp: bool = False):
        """(B, C_in, H, W) -> (B, N, C) tokens and their grid size."""
        x, size = self.patch_embed(x)
        return run_blocks(self.blocks, x, size, with_cp=with_cp), size


class VitBackbone(BaseModule):
    """Base of vitzoo backbones: stage freezing, ``norm_eval`` and pretrained loading.

    Subclasses build ``self.stages`` (one module per stage, each including the patch embedding
    or downsampling that opens it) and, optionally, ``self.stem`` (modules that belong to no
    stage, such as PiT's position embedding) before calling :meth:`_freeze_stages`.

    ``frozen_stages=k`` freezes the stem and the first ``k`` stages (parameters without grads,
    modules in eval mode, also during ``train()``); ``-1`` freezes nothing. ``norm_eval`` keeps
    BatchNorm layers in eval mode (LayerNorm has no running statistics).

    ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')`` accepts
    checkpoints in vitzoo's layout and in every foreign layout the family's converter knows
    (official, timm, mmpretrain); keys are converted before loading.
    """

    stages: nn.ModuleList

    def __init__(self,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(init_cfg=init_cfg)
        if not isinstance(frozen_stages, int) or frozen_stages < -1:
            raise ValueError(f'frozen_stages must be an int >= -1, got {frozen_stages!r}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp

    def stem_modules(self) -> List[nn.Module]:
        """Modules outside the stages that freeze together with the first stage."""
        return []

    def stem_parameters(self) -> List[nn.Parameter]:
        """Bare parameters (tokens, position embeddings) that freeze with the first stage."""
        return []

    def frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        if self.frozen_stages > len(self.stages):
            raise ValueError(f'frozen_stages={self.frozen_stages} but {type(self).__name__} has only '
                             f'{len(self.stages)} stages')
        modules = list(self.stem_modules()) + list(self.stages[:self.frozen_stages])
        out_norms = getattr(self, 'out_norms', None)
        if out_norms is not None:
            modules += list(out_norms[:self.frozen_stages])
        return modules

    def _freeze_stages(self) -> None:
        for module in self.frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False
        if self.frozen_stages >= 0:
            for param in self.stem_parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def init_weights(self) -> None:
        """MMEngine's initialisation, with ``init_cfg`` ``Pretrained`` entries (alone or in a list)
        loaded by :meth:`load_pretrained`."""
        init_weights_with_pretrained(self, super().init_weights)

    def load_pretrained(self, filename: str, prefix: Optional[str] = None, map_location='cpu',
                        strict: bool = True) -> LoadReport:
        """Load a checkpoint of any supported layout into this backbone, strictly unless ``strict=False``.

        See :func:`vitzoo.models.checkpoint.load_pretrained`: a missing file raises
        ``FileNotFoundError``, an unreadable one ``UnreadableCheckpointError``, one that does not fit
        (keys or shapes, beyond ``pretrained_missing_ok`` / ``pretrained_unexpected_ok``)
        ``CheckpointMismatchError``, each naming the file.
        """
        return load_pretrained(self, filename, prefix=prefix, map_location=map_location, strict=strict)
