"""What tools/train.py and tools/test.py do to a config before building the Runner.

* Without CUDA, ``SyncBN`` (used by the mmseg/mmdet configs) becomes ``BN``; a single process
  on GPUs gets ``BN`` too, since SyncBN needs a process group. Configs stay unchanged for users.
* A distributed run on CPU (``--launcher pytorch`` without CUDA) initialises the gloo process
  group itself, before the Runner would call ``torch.cuda.set_device``, and wraps the model in
  DDP with ``device_ids=None`` as DDP requires for CPU modules.
* After a run, every rank waits for the others and destroys the process group: a gloo group
  left alive at interpreter exit can abort the process ("terminate called without an active
  exception", pytorch/pytorch#190489), failing a run that had finished.
* The Runner loads ``load_from`` and ``--resume`` checkpoints strictly, through vitzoo's loader
  (:mod:`vitzoo.models.checkpoint`): every layout vitzoo converts, and a checkpoint that does not
  fit the model stops the run before any work, naming the file, its layout and the differing
  keys. ``load_partial = True`` in the config (``--partial`` of the tools) loads only what fits
  from ``load_from`` and logs what was left out; a resumed run always matches its checkpoint.
"""
import itertools
import os
import os.path as osp
from typing import Type

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..models.checkpoint import convert_with_layout, load_fitted, read_checkpoint, unwrap_model, unwrap_state_dict


def replace_syncbn(node):
    """Copy of a config node with every ``type='SyncBN'`` replaced by ``'BN'``."""
    if isinstance(node, dict):
        out = type(node)({k: replace_syncbn(v) for k, v in node.items()})
        if out.get('type') == 'SyncBN':
            out['type'] = 'BN'
        return out
    if isinstance(node, (list, tuple)):
        return type(node)(replace_syncbn(v) for v in node)
    return node


def prepare_runtime(cfg: Config, launcher: str) -> Config:
    """Adapt ``cfg`` to the machine: SyncBN and the distributed backend on CPU."""
    cuda = torch.cuda.is_available()
    if launcher == 'none' or not cuda:
        cfg.model = replace_syncbn(cfg.model)
    if launcher != 'none' and not cuda:
        if launcher != 'pytorch':
            raise RuntimeError(f'--launcher {launcher} needs GPUs; on CPU use --launcher pytorch (torchrun)')
        cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
        wrapper = dict(cfg.get('model_wrapper_cfg') or {})
        wrapper.setdefault('type', 'MMDistributedDataParallel')
        wrapper['device_ids'] = None
        cfg.model_wrapper_cfg = wrapper
        if not dist.is_initialized():
            dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                                    world_size=int(os.environ['WORLD_SIZE']))
    return cfg


class StrictCheckpointLoading:
    """Runner methods loading ``load_from`` / ``resume`` checkpoints through vitzoo's strict loader.

    Mixed into MMEngine's Runner (or a config's ``runner_type``) by :func:`build_runner`. The
    ``after_load_checkpoint`` hooks see the checkpoint before it loads, as with MMEngine's Runner.
    """

    _resuming = False

    def load_checkpoint(self, filename: str, map_location='cpu', strict=None, revise_keys=None):
        partial = bool(self.cfg.get('load_partial', False))
        checkpoint = read_checkpoint(filename, map_location)
        if self._resuming and not (isinstance(checkpoint, dict) and isinstance(checkpoint.get('meta'), dict)
                                   and 'epoch' in checkpoint['meta']):
            raise ValueError(f'cannot resume from {filename}: it holds weights only, not a training state '
                             '(meta, optimizer) written by tools/train.py; start from its weights with '
                             f'--cfg-options load_from={filename} instead of --resume')
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        layout, state_dict = convert_with_layout(unwrap_state_dict(checkpoint, filename))
        hint = ('A resumed run must match its checkpoint: resume with the config that wrote it.' if self._resuming
                else 'Pass --partial to tools/train.py or tools/test.py (load_partial = True in the config) '
                'to load only the tensors that fit.')
        load_fitted(unwrap_model(self.model), state_dict, filename, layout, strict=not partial if strict is None
                    else strict, hint=hint)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    def resume(self, filename: str, *args, **kwargs) -> None:
        if self.cfg.get('load_partial', False):
            raise ValueError('load_partial (--partial) applies to load_from: a resumed run must match its '
                             f'checkpoint ({filename}) exactly')
        self._resuming = True
        try:
            super().resume(filename, *args, **kwargs)
        finally:
            self._resuming = False


def strict_runner_class(runner_class: Type[Runner]) -> Type[Runner]:
    """``runner_class`` with :class:`StrictCheckpointLoading` mixed in."""
    if issubclass(runner_class, StrictCheckpointLoading):
        return runner_class
    return type(f'Strict{runner_class.__name__}', (StrictCheckpointLoading, runner_class), {})


_runners_built = itertools.count()


def build_runner(cfg: Config, launcher: str) -> Runner:
    """The Runner of ``cfg`` (or of its ``runner_type``), loading checkpoints strictly, after
    :func:`prepare_runtime`.

    MMEngine names a run's visualizer and logger ``<config name>_<timestamp>`` and hands back the
    existing instance of that name: a second run of the same config in the same process and the same
    second would write its logs and config into the first run's work dir. Every run after the first
    in a process is therefore named ``<config name>_run<n>`` (unless the config sets
    ``experiment_name``).
    """
    cfg = prepare_runtime(cfg, launcher)
    number = next(_runners_built)
    if number and cfg.get('experiment_name') is None:
        cfg.experiment_name = f'{osp.splitext(osp.basename(cfg.filename or "run"))[0]}_run{number}'
    runner_class = RUNNERS.get(cfg.runner_type) if 'runner_type' in cfg else Runner
    if runner_class is None:
        raise ValueError(f'runner_type {cfg.runner_type!r} is not a registered Runner')
    return strict_runner_class(runner_class).from_cfg(cfg)


def shutdown_distributed() -> None:
    """Synchronise the ranks and destroy the default process group, if one exists."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
