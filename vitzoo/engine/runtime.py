"""What tools/train.py and tools/test.py do to a config before building the Runner.

* Without CUDA, ``SyncBN`` (used by the mmseg/mmdet configs) becomes ``BN``; a single process
  on GPUs gets ``BN`` too, since SyncBN needs a process group. Configs stay unchanged for users.
* A distributed run on CPU (``--launcher pytorch`` without CUDA) initialises the gloo process
  group itself, before the Runner would call ``torch.cuda.set_device``, and wraps the model in
  DDP with ``device_ids=None`` as DDP requires for CPU modules.
* After a run, every rank waits for the others and destroys the process group: a gloo group
  left alive at interpreter exit can abort the process ("terminate called without an active
  exception", pytorch/pytorch#190489), failing a run that had finished.
"""
import os

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner


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


def build_runner(cfg: Config, launcher: str) -> Runner:
    """The Runner of ``cfg`` (or of its ``runner_type``) after :func:`prepare_runtime`."""
    cfg = prepare_runtime(cfg, launcher)
    return RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)


def shutdown_distributed() -> None:
    """Synchronise the ranks and destroy the default process group, if one exists."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
