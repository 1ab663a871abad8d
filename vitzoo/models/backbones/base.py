"""The OpenMMLab contract shared by every vitzoo backbone, and the facts each family declares.

:class:`VitBackbone` does what every family does alike: it resolves ``arch`` (a name of the
family's ``arch_zoo``, one of its aliases, or a custom dict whose per-stage lists it validates),
checks the common arguments, computes the stochastic-depth schedule, selects the outputs
(``out_indices``, ``out_channels``, ``out_strides``), runs the stages up to the last output asked
for, freezes stages and keeps BatchNorms in eval mode. Families build their stages and supply what
is specific to them.

The class attributes under "Family facts" are what tools and tests read instead of keeping
tables of their own: the FLOPs convention of the family's paper (``vitzoo.apis.complexity``,
``tools/misc/model_tables.py``), timm's names of its variants (``tools/analysis_tools/benchmark.py``)
and which checkpoint keys a dense model may lack or ignore (strict pretrained loading).
"""
import inspect
import math
import numbers
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import BaseModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from ..checkpoint import LoadReport, init_weights_with_pretrained, load_pretrained
from ..layers import Size, nlc_to_nchw


def check_probability(name: str, value) -> None:
    """A rate (dropout, drop path) must be a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f'{name} must be a number in [0, 1], got {value!r} ({type(value).__name__})')
    if not 0 <= value <= 1:
        raise ValueError(f'{name} must be in [0, 1], got {value}')


def check_flag(name: str, value) -> None:
    """An on/off argument must be a bool (a string such as ``'False'`` would read as true)."""
    if not isinstance(value, bool):
        raise TypeError(f'{name} must be a bool, got {value!r} ({type(value).__name__})')


def normalize_indices(indices: Union[int, Sequence[int]], num_outputs: int, what: str) -> List[int]:
    """Turn (possibly negative) output indices into sorted non-negative ones, checking type and range."""
    if isinstance(indices, int) and not isinstance(indices, bool):
        indices = [indices]
    if isinstance(indices, (str, bytes)) or not isinstance(indices, Sequence):
        raise TypeError(f'{what} must be an int or a sequence of ints, got {indices!r}')
    if len(indices) == 0:
        raise ValueError(f'{what} must name at least one of the {num_outputs} outputs, got {indices!r}')
    out = []
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f'{what} must hold ints, got {index!r} ({type(index).__name__}) in {indices!r}')
        if not -num_outputs <= index < num_outputs:
            raise ValueError(f'{what} {index} is out of range for {num_outputs} outputs '
                             f'(allowed: {-num_outputs}..{num_outputs - 1})')
        out.append(index % num_outputs)
    return sorted(set(out))


def build_out_norms(embed_dims: Sequence[int], norm_after_stage: Union[bool, Sequence[bool]],
                    eps: float = 1e-5) -> nn.ModuleList:
    """One LayerNorm (or Identity) per stage output; ``norm_after_stage`` is one bool or one per stage."""
    if isinstance(norm_after_stage, bool):
        norm_after_stage = [norm_after_stage] * len(embed_dims)
    if isinstance(norm_after_stage, (str, bytes)) or not isinstance(norm_after_stage, Sequence):
        raise TypeError(f'norm_after_stage must be a bool or one bool per stage, got {norm_after_stage!r}')
    if len(norm_after_stage) != len(embed_dims):
        raise ValueError(f'norm_after_stage needs one bool per stage ({len(embed_dims)}), got {norm_after_stage}')
    for flag in norm_after_stage:
        if not isinstance(flag, bool):
            raise TypeError(f'norm_after_stage must hold bools, got {flag!r} ({type(flag).__name__}) '
                            f'in {norm_after_stage!r}')
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
    """Base of vitzoo backbones: arguments, stage loop, stage freezing, ``norm_eval``, pretrained loading.

    Subclasses call ``super().__init__`` first (which resolves and validates the arguments and sets
    ``arch_settings``, ``num_stages``, ``out_indices``, ``out_channels``, ``out_strides`` and the
    per-stage ``drop_path_rates``), then build ``self.stages`` (one module per stage, each including
    the patch embedding or downsampling that opens it; ``stage(x, with_cp=...)`` returns
    ``(tokens, size)``) and call :meth:`_freeze_stages`. :meth:`forward` runs the stages up to the
    last of ``out_indices`` and turns tokens into maps with :meth:`stage_output`.

    ``frozen_stages=k`` freezes the stem (:meth:`stem_modules`, :meth:`stem_parameters`) and the first
    ``k`` stages with their output norms (parameters without grads, modules in eval mode, also
    during ``train()``); ``-1`` freezes nothing. ``norm_eval`` keeps BatchNorm layers in eval mode
    (LayerNorm has no running statistics). ``with_cp`` recomputes the blocks' activations in the
    backward pass instead of storing them.

    ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')`` accepts
    checkpoints in vitzoo's layout and in every foreign layout the family's converter knows
    (official, timm, mmpretrain); keys are converted before loading.
    """

    # --------------------------------------------------------------------------- variants
    #: Canonical variant name -> arch dict.
    arch_zoo: Dict[str, dict] = {}
    #: Other accepted names (mmpretrain's short ones) -> canonical name.
    arch_aliases: Dict[str, str] = {}
    #: Keys a custom arch dict must have, and those it may have.
    essential_keys: Tuple[str, ...] = ('embed_dims', 'depths')
    optional_keys: Tuple[str, ...] = ()
    #: Arch keys holding one entry per stage (as many as ``depths``).
    stage_keys: Tuple[str, ...] = ('embed_dims', 'depths')
    #: Stochastic depth: ``True``, block ``i`` of ``N`` gets ``rate * i / (N - 1)`` (the last one the
    #: full rate, ``torch.linspace``); ``False``, ``rate * i / N``.
    drop_path_reaches_rate: bool = True

    # ------------------------------------------------------------------------ family facts
    #: The family's paper as the model zoo names it (``'Twins'`` for PCPVT and SVT).
    paper: str = ''
    #: Whether the paper's published FLOPs count the attention matmuls (``q @ k^T``, ``attn @ v``).
    paper_flops_count_attention: bool = True
    #: The model-zoo note on the FLOPs column of the family's classifiers ("FLOPs <note>.").
    flops_note: str = ''
    #: timm's model name of each ``arch_zoo`` variant timm implements (classifier with the same weights).
    timm_names: Dict[str, str] = {}
    #: The backbone is built for one input size (``img_size``, a fixed position embedding), and so is
    #: its timm counterpart: tools measuring at another size pass it to both.
    builds_for_input_size: bool = False
    #: Regexes (``re.match``) of backbone keys that ImageNet classification checkpoints never hold
    #: (layers a dense model trains from scratch), and of backbone keys such checkpoints hold that
    #: this backbone lacks. Instance properties where they depend on the constructor's arguments.
    pretrained_missing_ok: Tuple[str, ...] = ()
    pretrained_unexpected_ok: Tuple[str, ...] = ()
    #: Parameter-name substrings (MMEngine ``paramwise_cfg.custom_keys``) the family's recipe trains
    #: without weight decay besides norms and biases: position embeddings, tokens
    #: (``tools/misc/swap_backbone.py --recipe``).
    no_weight_decay_keys: Tuple[str, ...] = ()
    #: Constructor arguments that give the maps dense models take (FPN necks, decode heads).
    dense_output_options: Dict[str, object] = {}

    stages: nn.ModuleList

    def __init__(self,
                 arch: Union[str, dict],
                 out_indices: Optional[Union[int, Sequence[int]]] = None,
                 drop_path_rate: float = 0.,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None,
                 dropout_rates: Optional[Dict[str, float]] = None,
                 output_options: Optional[dict] = None):
        """Resolve and check the common arguments.

        ``dropout_rates`` names the family's other rates (``drop_rate``, ``attn_drop_rate``) for the
        range check; ``output_options`` are the family's arguments that shape its outputs (see
        :meth:`output_layout`).
        """
        super().__init__(init_cfg=init_cfg)
        for name, rate in dict(dropout_rates or {}, drop_path_rate=drop_path_rate).items():
            check_probability(name, rate)
        check_flag('norm_eval', norm_eval)
        check_flag('with_cp', with_cp)
        self.arch_name, self.arch_settings = self.resolve_arch(arch)
        self.num_stages = len(self.arch_settings['depths'])
        self.out_indices, self.out_channels, self.out_strides = self.select_outputs(
            self.arch_settings, out_indices, **(output_options or {}))
        if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int):
            raise TypeError(f'frozen_stages must be an int, got {frozen_stages!r} ({type(frozen_stages).__name__})')
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages must be in -1..{self.num_stages} for {type(self).__name__} with '
                             f'{self.num_stages} stages (-1: none, 0: the stem only), got {frozen_stages}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.drop_path_rates = self.drop_path_schedule(drop_path_rate, self.blocks_per_stage(self.arch_settings))

    # -------------------------------------------------------------------- class-level queries
    @classmethod
    def resolve_arch(cls, arch: Union[str, Mapping]) -> Tuple[Optional[str], dict]:
        """``(canonical name or None, settings)`` of a zoo name, an alias or a custom arch dict (validated)."""
        family = cls.__name__
        if isinstance(arch, str):
            name = cls.arch_aliases.get(arch.lower(), arch.lower())
            if name not in cls.arch_zoo:
                aliases = f' (or the aliases {sorted(cls.arch_aliases)})' if cls.arch_aliases else ''
                raise ValueError(f'unknown {family} arch {arch!r}; choose one of {sorted(cls.arch_zoo)}{aliases} '
                                 f'or pass a dict with the keys {sorted(cls.essential_keys)}')
            return name, dict(cls.arch_zoo[name])
        if not isinstance(arch, Mapping):
            raise TypeError(f'{family} arch must be a name or a dict, got {arch!r} ({type(arch).__name__})')
        missing = set(cls.essential_keys) - set(arch)
        if missing:
            raise ValueError(f'custom {family} arch is missing the keys {sorted(missing)}; '
                             f'a custom arch needs {sorted(cls.essential_keys)}')
        unknown = set(arch) - set(cls.essential_keys) - set(cls.optional_keys)
        if unknown:
            raise ValueError(f'custom {family} arch has unknown keys {sorted(unknown)}; allowed: '
                             f'{sorted(cls.essential_keys)} and optionally {sorted(cls.optional_keys)}')
        depths = arch['depths']
        if (isinstance(depths, (str, bytes)) or not isinstance(depths, Sequence) or not depths
                or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in depths)):
            raise ValueError(f"{family} arch['depths'] must be a non-empty list of positive ints "
                             f'(blocks per stage), got {depths!r}')
        for key in cls.stage_keys:
            value = arch.get(key)
            if value is None:
                continue
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise TypeError(f"{family} arch['{key}'] must be a list with one entry per stage, got {value!r}")
            if len(value) != len(depths):
                raise ValueError(f"{family} arch['{key}'] has {len(value)} entries, expected {len(depths)} "
                                 f"(one per stage, as arch['depths'])")
        return None, dict(arch)

    @classmethod
    def blocks_per_stage(cls, arch: dict) -> List[int]:
        """Number of blocks (each with one drop-path rate) of every stage."""
        return list(arch['depths'])

    @classmethod
    def drop_path_schedule(cls, drop_path_rate: float, blocks_per_stage: Sequence[int]) -> List[List[float]]:
        """Per-stage lists of the blocks' drop-path rates, increasing linearly from 0 over all blocks."""
        total = sum(blocks_per_stage)
        if cls.drop_path_reaches_rate:
            rates = torch.linspace(0, drop_path_rate, total, device='cpu').tolist()  # also under a meta device
        else:
            rates = [drop_path_rate * i / total for i in range(total)]
        out, cursor = [], 0
        for count in blocks_per_stage:
            out.append(rates[cursor:cursor + count])
            cursor += count
        return out

    @classmethod
    def stage_strides(cls, arch: dict) -> List[int]:
        """Stride of each stage's patch embedding: 4 for the stem, 2 for every downsampling."""
        return [4] + [2] * (len(arch['depths']) - 1)

    @classmethod
    def output_layout(cls, arch: dict, **output_options) -> List[Tuple[int, Optional[int]]]:
        """``(channels, nominal stride)`` of every output the backbone can return, by output index.

        By default one map per stage: ``embed_dims`` at the product of the strides so far.
        """
        strides = []
        for stride in cls.stage_strides(arch):
            strides.append(stride * (strides[-1] if strides else 1))
        return list(zip(arch['embed_dims'], strides))

    @classmethod
    def select_outputs(cls, arch: dict, out_indices: Optional[Union[int, Sequence[int]]] = None,
                       **output_options) -> Tuple[List[int], Tuple[int, ...], Tuple[Optional[int], ...]]:
        """``(out_indices, channels, strides)`` of the outputs selected (``None``: all)."""
        layout = cls.output_layout(arch, **output_options)
        if out_indices is None:
            out_indices = range(len(layout))
        indices = normalize_indices(out_indices, len(layout), 'out_indices')
        return indices, tuple(layout[i][0] for i in indices), tuple(layout[i][1] for i in indices)

    @classmethod
    def describe_outputs(cls, arch: Optional[Union[str, dict]] = None,
                         out_indices: Optional[Union[int, Sequence[int]]] = None, **kwargs) -> dict:
        """``dict(channels=[...], strides=[...])`` of the maps a backbone built with these arguments
        returns, without building it. ``arch`` and ``out_indices`` default to the constructor's
        defaults; ``kwargs`` are other constructor arguments (those shaping the outputs count).
        Strides are nominal (the exact map size depends on the family's padding rules).
        """
        parameters = inspect.signature(cls.__init__).parameters
        unknown = set(kwargs) - set(parameters) - {'self'}
        if unknown:
            raise TypeError(f'{cls.__name__} takes no arguments {sorted(unknown)}')
        if arch is None:
            arch = parameters['arch'].default
        if out_indices is None:
            out_indices = parameters['out_indices'].default
        _, settings = cls.resolve_arch(arch)
        _, channels, strides = cls.select_outputs(settings, out_indices, **kwargs)
        return dict(channels=list(channels), strides=list(strides))

    @classmethod
    def zoo_name(cls, arch: Optional[Union[str, dict]] = None) -> Optional[str]:
        """The ``arch_zoo`` name of a variant name or alias (default: the constructor's), None for a dict."""
        if arch is None:
            arch = inspect.signature(cls.__init__).parameters['arch'].default
        return cls.resolve_arch(arch)[0] if isinstance(arch, str) else None

    @classmethod
    def timm_name(cls, arch: Optional[Union[str, dict]] = None, **kwargs) -> Optional[str]:
        """timm's name of the classifier with this backbone, or None where timm has none."""
        name = cls.zoo_name(arch)
        return cls.timm_names.get(name) if name else None

    # ------------------------------------------------------------------------------ forward
    def stage_output(self, index: int, x: torch.Tensor, size: Size,
                     keep: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The next stage's input and, when ``keep``, the map returned for stage ``index``, from the
        stage's (B, N, C) tokens. By default both are one contiguous NCHW map."""
        x = nlc_to_nchw(x, size).contiguous()
        return x, x

    def run_stages(self, x: torch.Tensor, **first_stage_kwargs) -> Tuple[torch.Tensor, ...]:
        """The maps of ``out_indices``; the stages after the last of them do not run."""
        outs = []
        for i in range(self.out_indices[-1] + 1):
            x, size = self.stages[i](x, with_cp=self.with_cp, **(first_stage_kwargs if i == 0 else {}))
            keep = i in self.out_indices
            x, out = self.stage_output(i, x, size, keep)
            if keep:
                outs.append(out)
        return tuple(outs)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(B, C, H, W) images -> the NCHW maps of the ``out_indices`` stages."""
        return self.run_stages(x)

    # ------------------------------------------------------------------------------ freezing
    def stem_modules(self) -> List[nn.Module]:
        """Modules outside the stages that freeze together with the first stage."""
        return []

    def stem_parameters(self) -> List[nn.Parameter]:
        """Bare parameters (tokens, position embeddings) that freeze with the first stage."""
        return []

    def frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
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
