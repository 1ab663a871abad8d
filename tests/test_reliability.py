"""Faults a real user meets, reproduced on tiny models and data: SIGKILL during training and during
checkpoint writes, exact resume, non-finite losses, and downloads from a misbehaving server."""
import glob
import hashlib
import http.server
import io
import math
import os
import os.path as osp
import random
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

from vitzoo.engine import NonFiniteLossError, latest_checkpoint
from vitzoo.utils import download
from vitzoo.utils.download import cached_copy_remedy, download_checkpoint

from helpers import REPO, free_port, run_tool, tiny_cls_config

DEMO = 'configs/demo/twins-pcpvt-tiny_1xb64_digits.py'
# A tiny model trains fastest on one thread, and its runs do not fight the other tests for the cores.
ONE_THREAD = dict(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
# Deterministic runs of the demo model on 16 digits (4 batches an epoch) with random augmentation
# (crops, flips: data-loader workers) and drop-path (main process), one checkpoint kept.
EXACT = """
randomness = dict(seed=0, deterministic=True)
train_dataloader['dataset']['pipeline'] = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=32, crop_ratio_range=(0.6, 1.0)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs')]
train_dataloader.update(num_workers={workers}, persistent_workers={persistent})
default_hooks = dict(checkpoint=dict(interval={interval}, max_keep_ckpts=1))
"""
EPOCHS = EXACT + "train_cfg = dict(by_epoch=True, max_epochs=3, val_interval=1)\n"
ITERATIONS = EXACT + """
train_dataloader['sampler'] = dict(type='InfiniteSampler', shuffle=True)
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=12, val_interval=4)
default_hooks['checkpoint'].update(by_epoch=False)
default_hooks['logger'] = dict(interval=1, log_metric_by_epoch=False)
log_processor = dict(by_epoch=False)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
"""
# Runs ``python SCRIPT ARGS`` (tools/train.py, or with torchrun) after injecting the fault that
# VITZOO_FAULT names: ``kill-at-step:N`` (SIGKILL before the N-th optimizer step),
# ``kill-in-write:NAME`` (SIGKILL halfway through writing the file NAME, temporary names included),
# ``kill-after-rename:NAME`` / ``kill-before-remove:NAME``, ``nan-at-steps:N,M`` (NaN losses).
DRIVER = r"""
import builtins, os, os.path as osp, runpy, signal, sys

fault, _, arg = os.environ.get('VITZOO_FAULT', '').partition(':')
rank0 = os.environ.get('RANK', '0') == '0'


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def named(path):
    return osp.basename(str(path)).lstrip('.').startswith(arg)


if fault == 'kill-at-step':
    from mmengine.optim import OptimWrapper
    update_params, steps = OptimWrapper.update_params, [0]

    def counted(self, *args, **kwargs):
        steps[0] += 1
        if steps[0] == int(arg) and rank0:
            die()
        return update_params(self, *args, **kwargs)
    OptimWrapper.update_params = counted
elif fault == 'kill-in-write':
    real_open = builtins.open

    class HalfWritten:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[:len(data) // 2])
            self.f.flush()
            os.fsync(self.f.fileno())
            die()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def __getattr__(self, name):
            return getattr(self.f, name)

    def opened(file, mode='r', *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return HalfWritten(f) if 'w' in mode and named(file) else f
    builtins.open = opened
elif fault == 'kill-after-rename':
    replace = os.replace

    def replaced(src, dst, *args, **kwargs):
        replace(src, dst, *args, **kwargs)
        if named(dst):
            die()
    os.replace = replaced
elif fault == 'kill-before-remove':
    remove = os.remove

    def removed(path, *args, **kwargs):
        if named(path):
            die()
        remove(path, *args, **kwargs)
    os.remove = removed
elif fault == 'nan-at-steps':
    from mmengine.model import BaseModel
    parse_losses, bad, steps = BaseModel.parse_losses, {int(s) for s in arg.split(',')}, [0]

    def poisoned(self, losses):
        steps[0] += 1
        if steps[0] in bad:
            losses = {k: v * float('nan') if 'loss' in k else v for k, v in losses.items()}
        return parse_losses(self, losses)
    BaseModel.parse_losses = poisoned

sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


# ------------------------------------------------------------------------------------------------
# Training runs killed at any point, resumed exactly
# ------------------------------------------------------------------------------------------------
def _config(tmp, digits_root, loop: str = EPOCHS, workers: int = 2, persistent: bool = True,
            interval: int = 1) -> str:
    os.makedirs(tmp, exist_ok=True)
    extra = loop.format(workers=workers, persistent=persistent, interval=interval)
    return tiny_cls_config(DEMO, str(tmp), digits_root, num_images=16, extra=extra)


def _train(config: str, work_dir: str, *options: str, fault: str = '', resume: bool = False,
           processes: int = 1) -> subprocess.CompletedProcess:
    """tools/train.py (or ``processes`` of it under torchrun) with VITZOO_FAULT injected by DRIVER."""
    driver = osp.join(osp.dirname(config), 'driver.py')
    with open(driver, 'w') as f:
        f.write(DRIVER)
    args = [config, '--work-dir', work_dir, *(['--resume'] if resume else [])]
    if options:
        args += ['--cfg-options', *options]
    env = dict(VITZOO_FAULT=fault, PORT=free_port(), **ONE_THREAD)
    if processes == 1:
        return run_tool(driver, 'tools/train.py', *args, env=env, check=False)
    return run_tool('tools/dist_launch.sh', str(processes), driver, 'tools/train.py', *args, env=env, check=False)


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f'exit {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc.stdout + proc.stderr


def _killed(proc: subprocess.CompletedProcess) -> None:
    # SIGKILL: -9 for the process itself, 1 from torchrun when one of its workers was killed
    assert proc.returncode in (-signal.SIGKILL, 1), f'exit {proc.returncode}:\n{proc.stderr[-3000:]}'
    assert 'SIGKILL' in proc.stderr or proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


def _load(path: str) -> dict:
    return torch.load(path, map_location='cpu', weights_only=False)


def _assert_bit_identical(a: str, b: str) -> None:
    """Two checkpoints hold the same weights and optimizer state, bit for bit."""
    first, second = _load(a), _load(b)
    assert first['state_dict'].keys() == second['state_dict'].keys()
    differ = [k for k, v in first['state_dict'].items() if not torch.equal(v, second['state_dict'][k])]
    assert not differ, f'{len(differ)} tensors differ, e.g. {differ[0]}: max abs diff ' \
        f'{(first["state_dict"][differ[0]] - second["state_dict"][differ[0]]).abs().max().item():.3g}'
    states = [first['optimizer']['state'], second['optimizer']['state']]
    for index, slots in states[0].items():
        for name, value in slots.items():
            assert torch.equal(value, states[1][index][name]), f'optimizer state {index}.{name} differs'


def _resume_point(work_dir: str) -> str:
    """The checkpoint ``--resume`` starts from, checked to be complete."""
    path = latest_checkpoint(work_dir)
    assert path and _load(path)['state_dict'], path
    return path


@pytest.fixture(scope='module')
def reference(digits_root, tmp_path_factory):
    """Uninterrupted runs: ``{loop name: (config, final checkpoint)}``, made on first use."""
    runs = {}

    def get(name: str, loop: str, final: str, **settings):
        if name not in runs:
            tmp = tmp_path_factory.mktemp(name)
            config = _config(tmp, digits_root, loop, **settings)
            _ok(_train(config, str(tmp / 'work')))
            runs[name] = config, str(tmp / 'work' / final)
        return runs[name]
    return get


def _kill_and_resume(config: str, work_dir: str, fault: str, *options: str, processes: int = 1) -> str:
    _killed(_train(config, work_dir, *options, fault=fault, processes=processes))
    start = _load(_resume_point(work_dir))['meta']
    log = _ok(_train(config, work_dir, *options, resume=True, processes=processes))
    assert f'resumed epoch: {start["epoch"]}, iter: {start["iter"]}' in log
    assert not glob.glob(osp.join(work_dir, '.*partial*')), 'temporary files left behind'
    return log


def test_kill_inside_a_checkpoint_write_keeps_the_previous_one(reference, tmp_path):
    """max_keep_ckpts=1: killed halfway through writing epoch_2.pth, epoch_1.pth is still there,
    last_checkpoint names it, and --resume ends bit-identical to the uninterrupted run."""
    config, final = reference('epochs', EPOCHS, 'epoch_3.pth')
    work_dir = str(tmp_path / 'work')
    _killed(_train(config, work_dir, fault='kill-in-write:epoch_2.pth'))
    assert _resume_point(work_dir) == osp.join(work_dir, 'epoch_1.pth')
    torn = [osp.basename(p) for p in glob.glob(osp.join(work_dir, '.*.partial-*'))]  # hidden: '*' skips them
    assert [name.split('.partial-')[0] for name in torn] == ['.epoch_2.pth'], os.listdir(work_dir)
    assert not osp.exists(osp.join(work_dir, 'epoch_2.pth'))
    log = _ok(_train(config, work_dir, resume=True))
    assert 'resumed epoch: 1, iter: 4' in log
    assert f'Removed what a killed run left behind: {torn[0]}' in log
    assert sorted(os.listdir(work_dir)).count('epoch_3.pth') == 1 and not glob.glob(osp.join(work_dir, '.*partial*'))
    assert not glob.glob(osp.join(work_dir, 'epoch_[12].pth')), 'max_keep_ckpts=1 kept older checkpoints'
    _assert_bit_identical(final, osp.join(work_dir, 'epoch_3.pth'))


def test_kill_at_a_random_step_resumes_bit_identical(reference, tmp_path):
    """Killed before any of the 12 optimizer steps but the first. Before step 5 no checkpoint exists
    yet (epoch_1.pth follows step 4): --resume finds none and trains afresh, to the same weights."""
    config, final = reference('epochs', EPOCHS, 'epoch_3.pth')
    step = random.randrange(2, 13)
    work_dir = str(tmp_path / 'work')
    if step > 4:
        _kill_and_resume(config, work_dir, f'kill-at-step:{step}')
    else:
        _killed(_train(config, work_dir, fault=f'kill-at-step:{step}'))
        assert latest_checkpoint(work_dir) is None, f'killed before step {step}'
        assert 'resumed epoch' not in _ok(_train(config, work_dir, resume=True))
    _assert_bit_identical(final, osp.join(work_dir, 'epoch_3.pth'))


def test_iteration_based_run_killed_resumes_bit_identical(reference, tmp_path):
    """The mmseg configs' loop: InfiniteSampler, checkpoints every 4 iterations, killed at step 7."""
    config, final = reference('iterations', ITERATIONS, 'iter_12.pth', interval=4)
    log = _kill_and_resume(config, str(tmp_path / 'work'), 'kill-at-step:7')
    assert 'resumed epoch: 0, iter: 4' in log
    _assert_bit_identical(final, str(tmp_path / 'work' / 'iter_12.pth'))


def test_latest_checkpoint_is_the_newest_complete_one(tmp_path):
    """--resume's choice: what last_checkpoint names, or a newer checkpoint of its series that a run
    killed before updating last_checkpoint left; epoch_/iter_ series without a pointer."""
    assert latest_checkpoint(str(tmp_path)) is None
    for name in ('epoch_2.pth', 'epoch_10.pth', 'best_score_epoch_11.pth', '.epoch_12.pth.partial-1'):
        (tmp_path / name).write_bytes(b'')
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_10.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_2.pth'))
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_10.pth')
    (tmp_path / 'epoch_10.pth').unlink()
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_2.pth')
    (tmp_path / 'last_checkpoint').write_text('/elsewhere/model.pth')
    assert latest_checkpoint(str(tmp_path)) == '/elsewhere/model.pth'


@pytest.mark.slow
@pytest.mark.parametrize('fault', ['kill-after-rename:epoch_2.pth', 'kill-before-remove:epoch_1.pth',
                                   'kill-in-write:last_checkpoint', 'kill-at-step:5'])
@pytest.mark.parametrize('workers,persistent', [(0, False), (2, False), (2, True)])
def test_kill_anywhere_resumes_bit_identical(reference, digits_root, tmp_path, fault, workers, persistent):
    """Every kill point of a checkpoint write, with and without (persistent) data-loader workers;
    the number of workers does not change the run either (all compare to the 2-worker reference)."""
    _, final = reference('epochs', EPOCHS, 'epoch_3.pth')
    config = _config(tmp_path, digits_root, EPOCHS, workers, persistent)
    work_dir = str(tmp_path / 'work')
    _kill_and_resume(config, work_dir, fault)
    _assert_bit_identical(final, osp.join(work_dir, 'epoch_3.pth'))


@pytest.mark.slow
@pytest.mark.parametrize('loop,final', [(EPOCHS, 'epoch_3.pth'), (ITERATIONS, 'iter_12.pth')])
def test_two_process_run_killed_resumes_bit_identical(digits_root, tmp_path, loop, final):
    """tools/dist_train.sh's torchrun with 2 gloo processes; rank 0 killed at its 4th step. The ranks
    are seeded differently, so each must get its own random state back."""
    config = _config(tmp_path, digits_root, loop, interval=1 if loop is EPOCHS else 2)
    option = 'randomness.diff_rank_seed=True'
    _ok(_train(config, str(tmp_path / 'reference'), option, processes=2))
    _kill_and_resume(config, str(tmp_path / 'work'), 'kill-at-step:4', option, processes=2)
    _assert_bit_identical(str(tmp_path / 'reference' / final), str(tmp_path / 'work' / final))


@pytest.mark.slow
def test_kills_at_random_times_resume_bit_identical(reference, tmp_path):
    """SIGKILL after a random delay (start-up, data loading, a step, validation, a write...), three
    times in a row, then a resume to the end."""
    config, final = reference('epochs', EPOCHS, 'epoch_3.pth')
    work_dir = str(tmp_path / 'work')
    rng = random.Random()
    for attempt in range(3):
        args = [sys.executable, 'tools/train.py', config, '--work-dir', work_dir, '--resume']
        proc = subprocess.Popen(args, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO, **ONE_THREAD),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        delay = rng.uniform(4, 12)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    _ok(_train(config, work_dir, resume=True))
    _assert_bit_identical(final, osp.join(work_dir, 'epoch_3.pth'))


# ------------------------------------------------------------------------------------------------
# Non-finite losses
# ------------------------------------------------------------------------------------------------
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(digits_root, tmp_path):
    config = _config(tmp_path, digits_root)
    work_dir = str(tmp_path / 'work')
    proc = _train(config, work_dir, fault='nan-at-steps:6')
    assert proc.returncode == 1
    epoch_1 = osp.join(work_dir, 'epoch_1.pth')
    assert re.search(r'NonFiniteLossError: non-finite loss at iteration 6 \(epoch 2, batch 2\): loss=nan\. '
                     rf'The step was not applied and training stops; the last checkpoint, {re.escape(epoch_1)}, '
                     'is where --resume starts', proc.stderr), proc.stderr[-3000:]
    assert _resume_point(work_dir) == epoch_1
    assert not glob.glob(osp.join(work_dir, 'epoch_[23].pth'))
    assert all(torch.isfinite(v).all() for v in _load(epoch_1)['state_dict'].values() if v.is_floating_point())


def test_nan_loss_steps_are_skipped_when_asked(digits_root, tmp_path):
    config = _config(tmp_path, digits_root)
    work_dir = str(tmp_path / 'work')
    log = _ok(_train(config, work_dir, "default_hooks.non_finite_loss.action='skip'", fault='nan-at-steps:6,7'))
    assert 'non-finite loss at iteration 6 (epoch 2, batch 2): loss=nan; the step was skipped (1 skipped so far)' in log
    assert 'non-finite loss at iteration 7 (epoch 2, batch 3): loss=nan; the step was skipped (2 skipped so far)' in log
    assert re.search(r'Epoch\(train\) +\[3\]\[4/4\].* skipped_steps: 2', log), log[-3000:]
    assert 'loss: nan' not in log
    final = _load(osp.join(work_dir, 'epoch_3.pth'))
    assert final['message_hub']['runtime_info']['skipped_steps'] == 2


class _ToySegmentor(BaseModel):
    """A linear model with an mmseg/mmdet-style loss dict (a tensor term, a list term, an accuracy);
    its loss is NaN at the forward calls numbered in ``poisoned``."""

    def __init__(self, poisoned=()):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.poisoned, self.calls = set(poisoned), 0

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(torch.stack(inputs))
        if mode == 'loss':
            self.calls += 1
            loss = out.float().pow(2).mean() * (float('nan') if self.calls in self.poisoned else 1.)
            return {'decode.loss_ce': loss, 'decode.acc_seg': torch.tensor(90.),
                    'aux.loss_mask': [torch.tensor(0.5), torch.tensor(0.25)]}
        return [dict(score=out.mean().item())] * len(inputs)


class _Weights(Hook):
    """Records the toy model's weight after every training iteration (after the guard's checks)."""

    def __init__(self):
        self.after_iter = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.after_iter.append(runner.model.linear.weight.detach().clone())


class _EpochScore(BaseMetric):
    """``score``: the number of the epoch validated, so every validation is a new best."""
    default_prefix = None

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def process(self, data_batch, data_samples):
        self.results.append(0)

    def compute_metrics(self, results):
        self.epoch += 1
        return dict(score=float(self.epoch))


def _toy_runner(tmp_path, poisoned=(), wrapper='OptimWrapper', non_finite=None, checkpoint=None,
                max_epochs=1, val=False) -> Runner:
    data = [dict(inputs=torch.randn(4, generator=torch.Generator().manual_seed(i))) for i in range(8)]
    loader = dict(dataset=data, sampler=dict(type='DefaultSampler', shuffle=False), batch_size=2, num_workers=0)
    return Runner(
        model=_ToySegmentor(poisoned), work_dir=str(tmp_path), experiment_name=f'toy-{tmp_path.name}',
        train_dataloader=loader, train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        optim_wrapper=dict(type=wrapper, optimizer=dict(type='SGD', lr=0.1)),
        val_dataloader=loader if val else None, val_cfg=dict() if val else None,
        val_evaluator=[_EpochScore()] if val else None,
        default_hooks=dict(checkpoint=dict(type='vitzoo.CheckpointHook', **(checkpoint or dict(interval=1))),
                           non_finite_loss=dict(type='vitzoo.NonFiniteLossHook', **(non_finite or {}))),
        custom_hooks=[_Weights()], default_scope='mmengine')


def _recorded(runner) -> list:
    return next(h for h in runner.hooks if isinstance(h, _Weights)).after_iter


@pytest.fixture(params=['OptimWrapper', 'AmpOptimWrapper'])
def optim_wrapper(request, monkeypatch):
    """Both wrappers; AmpOptimWrapper asks for CUDA, which CPU runs stand in for (its scaler disables itself)."""
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    return request.param


def test_non_finite_loss_stops_before_the_step(tmp_path, optim_wrapper):
    runner = _toy_runner(tmp_path, poisoned={3}, wrapper=optim_wrapper)
    with pytest.raises(NonFiniteLossError, match=r'^non-finite loss at iteration 3 \(epoch 1, batch 3\): '
                       r'decode.loss_ce=nan\. The step was not applied and training stops; no checkpoint was written'):
        runner.train()
    assert type(runner.optim_wrapper).__name__ == optim_wrapper
    assert len(_recorded(runner)) == 2 and torch.equal(runner.model.linear.weight, _recorded(runner)[1])
    assert not glob.glob(str(tmp_path / '*.pth'))


def test_non_finite_loss_step_is_skipped(tmp_path, optim_wrapper):
    runner = _toy_runner(tmp_path, poisoned={2}, wrapper=optim_wrapper, non_finite=dict(action='skip'))
    runner.train()
    weights = _recorded(runner)
    assert torch.equal(weights[1], weights[0]) and not torch.equal(weights[2], weights[1])
    assert runner.message_hub.get_info('skipped_steps') == 1
    assert runner.message_hub.get_scalar('train/skipped_steps').current() == 1
    logged = runner.message_hub.get_scalar('train/decode.loss_ce').data[0]
    assert len(logged) == 3 and all(map(math.isfinite, logged))  # the skipped step is not averaged in
    assert 'update_params' not in vars(runner.optim_wrapper)  # the guard is gone after training


def test_too_many_non_finite_steps_in_a_row_stop_even_when_skipping(tmp_path):
    runner = _toy_runner(tmp_path, poisoned={1, 2, 3}, non_finite=dict(action='skip', max_consecutive_skips=2))
    with pytest.raises(NonFiniteLossError, match=r'iteration 3 .*: decode.loss_ce=nan, 3 non-finite losses in a '
                       r'row \(max_consecutive_skips=2\)'):
        runner.train()
    with pytest.raises(ValueError, match=r"action must be one of \('stop', 'skip'\), got 'ignore'"):
        _toy_runner(tmp_path / 'bad', non_finite=dict(action='ignore'))


def test_checkpoint_with_non_finite_weights_is_refused(tmp_path):
    runner = _toy_runner(tmp_path, max_epochs=2)

    class Poison(Hook):
        def after_train_epoch(self, runner):
            if runner.epoch == 1:
                runner.model.linear.bias.data.fill_(float('inf'))
    runner.register_hook(Poison(), priority='LOW')
    epoch_2 = osp.join(str(tmp_path), 'epoch_2.pth')
    with pytest.raises(FloatingPointError, match=rf'^not writing {re.escape(epoch_2)}: 1 weight tensors hold NaN or '
                       rf'Inf \(linear.bias\); the last checkpoint \({re.escape(str(tmp_path))}/epoch_1.pth\) '
                       'stays the resume point'):
        runner.train()
    assert _resume_point(str(tmp_path)) == osp.join(str(tmp_path), 'epoch_1.pth')
    assert not osp.exists(epoch_2) and not glob.glob(str(tmp_path / '.*partial*'))


def test_checkpoint_hook_keeps_mmengine_options(tmp_path):
    """interval, max_keep_ckpts, save_best, out_dir and save_optimizer work as in MMEngine's hook;
    the previous best is removed only after the new one is written."""
    runner = _toy_runner(tmp_path / 'work', max_epochs=5, val=True, checkpoint=dict(
        interval=2, max_keep_ckpts=2, save_best='score', rule='greater', out_dir=str(tmp_path / 'out'),
        save_optimizer=False))
    runner.train()
    out = tmp_path / 'out' / 'work'
    assert sorted(p.name for p in out.iterdir()) == ['best_score_epoch_5.pth', 'epoch_4.pth', 'epoch_5.pth']
    assert 'optimizer' not in _load(str(out / 'epoch_5.pth'))
    assert (tmp_path / 'work' / 'last_checkpoint').read_text() == str(out / 'epoch_5.pth')


# ------------------------------------------------------------------------------------------------
# Downloads

# ------------------------------------------------------------------------------------------------
class _FlakyHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` with Range and If-Range support, misbehaving as ``server.faults`` says.

    Faults by file name: ``cut`` (a list, consumed per response: ``True`` sends half the body and
    closes), ``ignore-range`` (always 200 with the whole file), ``stall-headers`` / ``stall-body``
    (go silent before the headers / after half the body), ``slow`` (trickle the body).
    """
    protocol_version = 'HTTP/1.1'

    def do_GET(self):  # noqa: N802 (http.server's naming)
        server = self.server
        name = self.path.lstrip('/')
        server.requests.append((name, self.headers.get('Range')))
        fault = server.faults.get(name)
        if name not in server.files:
            self.send_error(404, 'Not Found')
            return
        data, etag = server.files[name]
        if fault == 'stall-headers':
            time.sleep(3)
            return
        requested = re.match(r'bytes=(\d+)-$', self.headers.get('Range') or '')
        if_range = self.headers.get('If-Range')
        start = 0
        if requested and fault != 'ignore-range' and if_range in (None, etag):
            start = int(requested.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header('Content-Range', f'bytes */{len(data)}')
                self.send_header('Content-Length', '0')
                self.end_headers()
                return
            self.send_response(206)
            self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header('Content-Length', str(len(body)))
        self.send_header('ETag', etag)
        self.end_headers()
        cuts = server.cuts.get(name) or [False]
        if cuts.pop(0) or fault == 'stall-body':
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            if fault == 'stall-body':
                time.sleep(3)
            self.close_connection = True
            return
        if fault == 'slow':
            for i in range(0, len(body), len(body) // 20):
                self.wfile.write(body[i:i + len(body) // 20])
                self.wfile.flush()
                time.sleep(0.1)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky_server():
    """``(server, base_url)``; put files with ``server.files[name] = (bytes, etag)``."""
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _FlakyHandler)
    server.daemon_threads = True
    server.files, server.faults, server.cuts, server.requests = {}, {}, {}, []
    threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()
    yield server, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()


def _put(server, name: str, size: int = 200_000, etag: str = '"v1"') -> bytes:
    data = os.urandom(size)
    server.files[name] = (data, etag)
    return data


def _hashed_name(data: bytes, stem: str = 'weights') -> str:
    return f'{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth'


@pytest.mark.parametrize('hashed', [False, True])
def test_download_resumes_a_transfer_cut_short(flaky_server, tmp_path, hashed):
    server, url = flaky_server
    name = 'weights.pth'
    data = _put(server, name)
    if hashed:
        name = _hashed_name(data)
        server.files[name] = server.files.pop('weights.pth')
    server.cuts[name] = [True]
    path = download_checkpoint(f'{url}/{name}', str(tmp_path))
    assert open(path, 'rb').read() == data
    assert server.requests == [(name, None), (name, f'bytes={len(data) // 2}-')]
    assert sorted(os.listdir(tmp_path)) == [name, name + '.lock']
    download_checkpoint(f'{url}/{name}', str(tmp_path))  # cached: no request
    assert len(server.requests) == 2


def test_download_keeps_what_arrived_when_the_server_keeps_cutting(flaky_server, tmp_path):
    server, url = flaky_server
    data = _put(server, 'weights.pth')
    server.cuts['weights.pth'] = [True] * download.ATTEMPTS
    with pytest.raises(ConnectionError, match=rf'{url}/weights.pth: the server cut the transfer short 3 times'):
        download_checkpoint(f'{url}/weights.pth', str(tmp_path))
    part = tmp_path / 'weights.pth.part'
    held = part.stat().st_size
    assert not (tmp_path / 'weights.pth').exists()
    assert data.startswith(part.read_bytes()) and held > len(data) // 2
    assert open(download_checkpoint(f'{url}/weights.pth', str(tmp_path)), 'rb').read() == data
    assert server.requests[-1] == ('weights.pth', f'bytes={held}-')
    assert not part.exists()


def test_download_starts_over_when_the_server_ignores_range(flaky_server, tmp_path):
    server, url = flaky_server
    data = _put(server, 'weights.pth')
    server.cuts['weights.pth'] = [True]
    server.faults['weights.pth'] = 'ignore-range'
    path = download_checkpoint(f'{url}/weights.pth', str(tmp_path))
    assert open(path, 'rb').read() == data
    assert server.requests[1] == ('weights.pth', f'bytes={len(data) // 2}-')  # asked, got 200


def test_download_starts_over_when_the_file_changed_meanwhile(flaky_server, tmp_path):
    server, url = flaky_server
    _put(server, 'weights.pth', etag='"v1"')
    server.cuts['weights.pth'] = [True] * download.ATTEMPTS
    with pytest.raises(ConnectionError):
        download_checkpoint(f'{url}/weights.pth', str(tmp_path))
    new = _put(server, 'weights.pth', etag='"v2"')  # a new release under the same name
    assert open(download_checkpoint(f'{url}/weights.pth', str(tmp_path)), 'rb').read() == new


def test_download_of_a_part_longer_than_the_file_starts_over(flaky_server, tmp_path):
    server, url = flaky_server
    data = _put(server, 'weights.pth')
    (tmp_path / 'weights.pth.part').write_bytes(os.urandom(len(data) + 10))
    assert open(download_checkpoint(f'{url}/weights.pth', str(tmp_path)), 'rb').read() == data
    assert [r for _, r in server.requests] == [f'bytes={len(data) + 10}-', None]


def test_download_hash_mismatch_is_refused_and_removed(flaky_server, tmp_path):
    server, url = flaky_server
    _put(server, 'weights-deadbeef.pth')
    with pytest.raises(ValueError, match=rf'{url}/weights-deadbeef.pth is corrupt: its sha256 starts with'):
        download_checkpoint(f'{url}/weights-deadbeef.pth', str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ['weights-deadbeef.pth.lock']


def test_download_errors_name_the_url(flaky_server, tmp_path):
    server, url = flaky_server
    with pytest.raises(ConnectionError, match=rf'cannot download {url}/missing.pth: HTTP 404'):
        download_checkpoint(f'{url}/missing.pth', str(tmp_path))
    _put(server, 'headers.pth')
    server.faults['headers.pth'] = 'stall-headers'
    with pytest.raises(ConnectionError, match=rf'cannot download {url}/headers.pth: no answer within 1 s'):
        download_checkpoint(f'{url}/headers.pth', str(tmp_path), timeout=1)
    _put(server, 'body.pth')
    server.faults['body.pth'] = 'stall-body'
    with pytest.raises(ConnectionError, match=rf'{url}/body.pth: the server sent nothing for 1 s; the 100000 '
                       'bytes received are kept in .*body.pth.part'):
        download_checkpoint(f'{url}/body.pth', str(tmp_path), timeout=1)
    with pytest.raises(ConnectionError, match=r'cannot download http://127.0.0.1:1/x.pth: .*refused'):
        download_checkpoint('http://127.0.0.1:1/x.pth', str(tmp_path))
    assert not any(name.endswith('.pth') for name in os.listdir(tmp_path))


_CLIENT = '''
import sys
from vitzoo.utils.download import download_checkpoint
print(download_checkpoint(sys.argv[1], sys.argv[2]))
'''


def test_concurrent_downloads_of_one_url_fetch_it_once(flaky_server, tmp_path):
    server, url = flaky_server
    data = _put(server, 'weights.pth', size=400_000)
    server.faults['weights.pth'] = 'slow'  # about 2 s: the second client arrives while the first downloads
    cache = str(tmp_path / 'cache')
    env = dict(os.environ, PYTHONPATH=REPO)
    clients = [subprocess.Popen([sys.executable, '-c', _CLIENT, f'{url}/weights.pth', cache], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [client.communicate(timeout=120) for client in clients]
    assert [client.returncode for client in clients] == [0, 0], outputs
    assert {out.strip() for out, _ in outputs} == {osp.join(cache, 'weights.pth')}
    assert server.requests == [('weights.pth', None)]
    assert sum('waiting for another process' in err for _, err in outputs) == 1
    assert open(osp.join(cache, 'weights.pth'), 'rb').read() == data


def test_cached_copy_remedy_names_the_file(flaky_server, tmp_path, monkeypatch):
    server, url = flaky_server
    _put(server, 'weights.pth')
    path = download_checkpoint(f'{url}/weights.pth', str(tmp_path / 'cache dir'))
    assert cached_copy_remedy(path) == (f"it is the downloaded copy in the cache, damaged: remove it (rm '{path}') "
                                        'and the next run downloads it again')
    monkeypatch.setenv('VITZOO_CACHE', str(tmp_path / 'default'))
    assert cached_copy_remedy(str(tmp_path / 'default' / 'x.pth')).startswith('it is the downloaded copy')
    assert cached_copy_remedy(str(tmp_path / 'mine' / 'model.pth')) is None


def test_a_damaged_cached_checkpoint_is_named_with_its_remedy(flaky_server, tmp_path, monkeypatch):
    """A cached download that no longer loads: the error names the cached file and how to replace it."""
    from vitzoo.models.checkpoint import UnreadableCheckpointError, read_checkpoint
    server, url = flaky_server
    buffer = io.BytesIO()
    torch.save({'w': torch.ones(3)}, buffer)
    server.files['good.pth'] = (buffer.getvalue(), '"v1"')
    monkeypatch.setenv('VITZOO_CACHE', str(tmp_path / 'cache'))
    assert torch.equal(read_checkpoint(f'{url}/good.pth')['w'], torch.ones(3))
    cached = str(tmp_path / 'cache' / 'good.pth')
    with open(cached, 'r+b') as f:
        f.truncate(40)  # the disk filled up, or someone edited the cache
    path = re.escape(cached)
    with pytest.raises(UnreadableCheckpointError, match=rf'good.pth \(cached as {path}\).*\(rm {path}\) and the '
                       'next run downloads it again'):
        read_checkpoint(f'{url}/good.pth')
    open(cached, 'wb').close()
    with pytest.raises(UnreadableCheckpointError, match=r'is empty \(0 bytes\).*remove it \(rm'):
        read_checkpoint(f'{url}/good.pth')
