"""Helpers shared by the tests: running the tools, writing tiny configs, comparing attention paths."""
import os
import os.path as osp
import socket
import subprocess
import sys
from typing import Callable, Optional

import torch
from torch import nn

from vitzoo.models import set_fused_attn

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def run_tool(*args, timeout: int = 600, env=None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python tools/<args>`` (or a shell script under tools/) from the repo root."""
    full_env = dict(os.environ, PYTHONPATH=REPO, PYTHON=sys.executable, **(env or {}))
    full_env['PATH'] = osp.dirname(sys.executable) + os.pathsep + full_env.get('PATH', '')
    cmd = ['bash', *args] if args[0].endswith('.sh') else [sys.executable, *args]
    proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{" ".join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}')
    return proc


def free_port() -> str:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


def set_mask_padding(model: nn.Module, enabled: bool) -> None:
    """Switch padded-window masking on or off in every windowed attention of ``model``."""
    for m in model.modules():
        if hasattr(m, 'mask_padding'):
            m.mask_padding = enabled


def fused_eager_gap(model: nn.Module, x: torch.Tensor, forward: Optional[Callable] = None) -> float:
    """Largest difference between ``forward(x)`` (default ``model(x)``) with fused and with eager attention.

    The output may be a tensor or a sequence of tensors; ``model`` is left on the fused path.
    """
    forward = forward or model

    def outputs():
        out = forward(x)
        return [out] if isinstance(out, torch.Tensor) else list(out)

    with torch.no_grad():
        try:
            fused = outputs()
            set_fused_attn(model, False)
            eager = outputs()
        finally:
            set_fused_attn(model, True)
    return max((a - b).abs().max().item() for a, b in zip(fused, eager, strict=True))


def tiny_cls_config(base_config: str, out_dir: str, data_root: str, img_size: int = 32,
                    num_images: int = 16, extra: str = '') -> str:
    """Write a config that trains ``base_config``'s model on a few digits images for one epoch."""
    base = base_config if osp.isabs(base_config) else osp.join(REPO, base_config)
    path = osp.join(out_dir, 'tiny_' + osp.basename(base_config))
    with open(path, 'w') as f:
        f.write(f'''
_base_ = {base!r}
data_root = {data_root!r}
data_preprocessor = dict(num_classes=10)
model = dict(head=dict(num_classes=10))
pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=({img_size}, {img_size})),
            dict(type='PackInputs')]
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False, dataset=dict(
    _delete_=True, type='CustomDataset', data_root=data_root, ann_file='meta/train.txt',
    data_prefix='train', pipeline=pipeline, indices={num_images}))
val_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False, dataset=dict(
    _delete_=True, type='CustomDataset', data_root=data_root, ann_file='meta/val.txt',
    data_prefix='val', pipeline=pipeline, indices=8))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator
train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
{extra}
''')
    return path
