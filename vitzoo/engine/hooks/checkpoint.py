"""MMEngine's CheckpointHook with checkpoints that survive a SIGKILL at any instant and resume exactly."""
import glob
import os
import os.path as osp
import re
from typing import List, Optional, Tuple

import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size, is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook as MMEngineCheckpointHook
from mmengine.model import is_model_wrapper
from mmengine.runner import IterBasedTrainLoop

from ...registry import HOOKS
from ...utils.atomic import remove_leftovers, write_atomically
from . import random_state

_ATOMIC_BACKEND = 'vitzoo_atomic_local'
_NUMBERED = re.compile(r'(.*?)(\d+)\.pth$')


def latest_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint that ``--resume`` continues from in ``work_dir``; None when there is none.

    It is the one ``last_checkpoint`` names or, if a later checkpoint of the same series
    (``epoch_<n>.pth``, ``iter_<n>.pth``) is there, that one: a run killed between renaming a new
    checkpoint into place and updating ``last_checkpoint`` leaves it complete but not yet named.
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    named = None
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip() or None
    if named is None:
        candidates = _series(work_dir, 'epoch_') + _series(work_dir, 'iter_')
    else:
        match = _NUMBERED.match(osp.basename(named))
        if not match:  # a name of another form: trust the pointer
            return named
        candidates = _series(osp.dirname(named), match.group(1)) + [(int(match.group(2)), named)]
    return max(candidates)[1] if candidates else None


def _series(directory: str, prefix: str) -> List[Tuple[int, str]]:
    """``(n, path)`` of the checkpoints ``<prefix><n>.pth`` in ``directory``."""
    series = []
    for path in glob.glob(osp.join(glob.escape(directory), f'{glob.escape(prefix)}*.pth')):
        match = _NUMBERED.match(osp.basename(path))
        if match and match.group(1) == prefix:
            series.append((int(match.group(2)), path))
    return series


@register_backend(_ATOMIC_BACKEND)
class AtomicLocalBackend(LocalBackend):
    """Local files written through a temporary file and a rename: complete or absent, never torn."""

    def put(self, obj: bytes, filepath) -> None:
        os.makedirs(osp.dirname(str(filepath)) or '.', exist_ok=True)
        write_atomically(str(filepath), obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)


def _delete(backend, path: str) -> bool:
    """Delete the checkpoint ``path`` (a file, or a directory as DeepSpeed writes); False if absent."""
    if backend.isfile(path):
        backend.remove(path)
    elif backend.isdir(path):
        backend.rmtree(path)
    else:
        return False
    return True


class _DeferredRemovals:
    """A file backend whose ``remove``/``rmtree`` wait until :meth:`run` (after the new file is in place)."""

    def __init__(self, backend):
        self.backend, self.queued = backend, []

    def remove(self, path) -> None:
        self.queued.append(path)

    def rmtree(self, path) -> None:
        self.queued.append(path)

    def run(self) -> None:
        for path in self.queued:
            _delete(self.backend, path)

    def __getattr__(self, name):
        return getattr(self.__dict__['backend'], name)


@HOOKS.register_module()
class CheckpointHook(MMEngineCheckpointHook):
    """MMEngine's ``CheckpointHook`` (same arguments) made safe to kill and exact to resume.

    * **Atomic.** Every checkpoint and the ``last_checkpoint`` pointer are written to a temporary
      file in the same directory, flushed to disk and renamed into place (the directory is flushed
      too). The checkpoints that ``max_keep_ckpts`` or a new best retire are deleted only once the
      new one is in place, so ``last_checkpoint`` names a complete checkpoint at every instant and
      ``--resume`` starts from it. Temporary files of killed runs are deleted when training starts,
      and so are checkpoints that a killed run had retired but not yet deleted. (For local
      directories; object stores write objects whole already.)
    * **Finite.** A model with NaN or infinite weights is not saved: the error names the tensors
      and the last checkpoint stays the resume point.
    * **Exact resume.** Checkpoints carry each rank's random state and the sampler seed
      (see :mod:`.random_state`); a resumed run restores them before its first iteration and loads
      every batch with generators seeded by the batch's position in the sample stream, and
      validation leaves the training random state as it found it. With
      ``randomness=dict(seed=..., deterministic=True)`` a run killed at any point and resumed with
      ``--resume`` ends with the same weights, bit for bit, as one that was never interrupted,
      given the same number of processes.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._held_random_state = None

    # ---- atomic, ordered writes -------------------------------------------------------------
    def before_train(self, runner) -> None:
        local = '://' not in str(self.out_dir or runner.work_dir)
        if local and self.backend_args is None and self.file_client_args is None:
            self.backend_args = dict(backend=_ATOMIC_BACKEND)
        super().before_train(runner)
        if is_main_process() and isinstance(self.file_backend, LocalBackend):
            self._clean_up_after_a_killed_run(runner)
        self._prepare_random_state(runner)

    def _clean_up_after_a_killed_run(self, runner) -> None:
        leftovers = remove_leftovers(self.out_dir)
        if runner.work_dir != self.out_dir:
            leftovers += remove_leftovers(runner.work_dir)
        kept = getattr(self, 'keep_ckpt_ids', ())
        retired = [self._checkpoint_path(step) for step in runner.message_hub.get_info('retired_ckpt_ids', [])
                   if step not in kept]
        retired = [path for path in retired if _delete(self.file_backend, path)]
        if leftovers or retired:
            runner.logger.info('Removed what a killed run left behind: '
                               f'{", ".join(osp.basename(p) for p in leftovers + retired)}')

    def _checkpoint_path(self, step: int) -> str:
        return self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(step))

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        retired: List[int] = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                retired.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        # Saved in the checkpoint: a run killed before deleting them deletes them when resumed.
        runner.message_hub.update_info('retired_ckpt_ids', retired)
        filename = self.filename_tmpl.format(step)
        path = self.file_backend.join_path(self.out_dir, filename)
        self._refuse_non_finite_weights(runner, path)
        self.last_ckpt = path
        runner.message_hub.update_info('last_ckpt', path)
        runner.message_hub.update_info('random_state', self._gather_random_state(runner))
        runner.save_checkpoint(self.out_dir, filename, self.file_client_args, save_optimizer=self.save_optimizer,
                               save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
                               backend_args=self.backend_args, **self.args)
        if is_main_process():
            write_atomically(osp.join(runner.work_dir, 'last_checkpoint'), path)
            for old in retired:
                _delete(self.file_backend, self._checkpoint_path(old))

    def _save_best_checkpoint(self, runner, metrics) -> None:
        if self.save_best:
            self._refuse_non_finite_weights(runner, 'the best checkpoint')
        deferred = _DeferredRemovals(self.file_backend)
        self.file_backend = deferred
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            self.file_backend = deferred.backend
        deferred.run()

    def _refuse_non_finite_weights(self, runner, path: str) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        bad = [name for name, tensor in model.state_dict().items()
               if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
        if bad:
            last = runner.message_hub.get_info('last_ckpt') or 'none was written'
            raise FloatingPointError(
                f'not writing {path}: {len(bad)} weight tensors hold NaN or Inf ({", ".join(bad[:5])}'
                f'{", ..." if len(bad) > 5 else ""}); the last checkpoint ({last}) stays the resume point')

    # ---- random state -----------------------------------------------------------------------
    def _gather_random_state(self, runner) -> dict:
        """Every rank's generator states (all ranks take part) and the sampler seed."""
        own = self._held_random_state or random_state.capture()
        sampler = random_state.sampler_of(runner.train_loop.dataloader)
        return dict(ranks=all_gather_object(own), sampler_seed=getattr(sampler, 'seed', None))

    def _prepare_random_state(self, runner) -> None:
        """Restore the random state of the checkpoint a resumed run starts from; seed data loading."""
        loader = runner.train_loop.dataloader
        saved = runner.message_hub.get_info('random_state')
        if saved is not None:
            ranks, world_size = saved['ranks'], get_world_size()
            if len(ranks) != world_size:
                runner.logger.warning(f'The checkpoint was written by {len(ranks)} processes and this run has '
                                      f'{world_size}: it continues with the random state of rank 0, so it '
                                      'will not repeat an uninterrupted run exactly.')
            random_state.restore(ranks[get_rank() if len(ranks) == world_size else 0])
            sampler = random_state.sampler_of(loader)
            if saved['sampler_seed'] is not None and hasattr(sampler, 'seed'):
                sampler.seed = saved['sampler_seed']
        elif runner.iter > 0:
            runner.logger.warning('The checkpoint carries no random state (it was not written by '
                                  'vitzoo.CheckpointHook): the resumed run will not repeat an uninterrupted one '
                                  'exactly.')
        if isinstance(runner.train_loop, IterBasedTrainLoop):
            batch_size = loader.batch_size or loader.batch_sampler.batch_size

            def first_position():
                return runner.iter * batch_size
        else:
            def first_position():
                return runner.epoch * len(random_state.sampler_of(loader))
        if not random_state.seed_batches(loader, runner.seed, get_rank(), first_position):
            runner.logger.warning('Data augmentation is not seeded per batch (the training data loader has no '
                                  'sampler inside a batch sampler, or its dataset takes no attributes): a resumed '
                                  'run may draw other augmentations than an uninterrupted one.')

    def before_val(self, runner) -> None:
        self._held_random_state = random_state.capture()

    def after_val(self, runner) -> None:
        if self._held_random_state is not None:
            random_state.restore(self._held_random_state)
            self._held_random_state = None
