"""Stop training at a NaN or infinite loss, or skip such steps, instead of training on garbage."""
from typing import Optional

import torch
import torch.distributed as dist
from mmengine.dist import is_distributed
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.runner import IterBasedTrainLoop

from ...registry import HOOKS

ACTIONS = ('stop', 'skip')


class NonFiniteLossError(FloatingPointError):
    """Training met a NaN or infinite loss."""


def _finite(value) -> bool:
    return bool(torch.isfinite(torch.as_tensor(value, dtype=torch.float64)).all())


def non_finite_terms(log_vars: Optional[dict]) -> dict:
    """The loss terms of ``log_vars`` (keys containing ``loss``, as MMEngine sums them) that are NaN
    or infinite, as floats; the total ``loss`` only when no single term is to blame."""
    bad = {key: torch.as_tensor(value, dtype=torch.float64).sum().item()
           for key, value in (log_vars or {}).items() if 'loss' in key and not _finite(value)}
    if len(bad) > 1:
        bad.pop('loss', None)
    return bad


def _optim_wrappers(runner) -> list:
    wrappers = runner.optim_wrapper
    return list(wrappers.values()) if isinstance(wrappers, OptimWrapperDict) else [wrappers]


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Checks the loss of every optimizer step before it is applied.

    A NaN or infinite loss (on any rank: the ranks agree) never reaches ``backward`` and the
    optimizer, so the weights stay those of the previous step, and then:

    * ``action='stop'`` (default) raises :class:`NonFiniteLossError` naming the iteration and the
      non-finite loss terms. Nothing more is trained or saved; the last checkpoint is the resume
      point.
    * ``action='skip'`` leaves that step out (no update; schedules move on), logs a warning naming
      the terms and counts the skipped steps in the training log (``skipped_steps``, carried across
      resumes). At more than ``max_consecutive_skips`` non-finite steps in a row it stops as
      above: the model or the data is broken, not one batch.

    Works with any ``OptimWrapper`` (``AmpOptimWrapper`` included) and with the loss dicts of
    mmpretrain, mmseg and mmdet models. With gradient accumulation a skipped micro-batch adds no
    gradient and does not count towards the accumulation.
    """
    priority = 'HIGHEST'  # before RuntimeInfoHook logs the step's losses

    def __init__(self, action: str = 'stop', max_consecutive_skips: int = 10):
        if action not in ACTIONS:
            raise ValueError(f'NonFiniteLossHook: action must be one of {ACTIONS}, got {action!r}')
        if not isinstance(max_consecutive_skips, int) or max_consecutive_skips < 1:
            raise ValueError(f'NonFiniteLossHook: max_consecutive_skips must be a positive int, '
                             f'got {max_consecutive_skips!r}')
        self.action = action
        self.max_consecutive_skips = max_consecutive_skips
        self._step_was_skipped = False
        self._consecutive = 0

    def before_train(self, runner) -> None:
        for wrapper in _optim_wrappers(runner):
            self._guard(wrapper)

    def after_train(self, runner) -> None:
        for wrapper in _optim_wrappers(runner):
            wrapper.__dict__.pop('update_params', None)

    def _guard(self, wrapper: OptimWrapper) -> None:
        update_params = wrapper.update_params

        def guarded_update_params(loss: torch.Tensor, *args, **kwargs) -> None:
            if self._non_finite_on_any_rank(loss):
                self._step_was_skipped = True
                return
            update_params(loss, *args, **kwargs)

        wrapper.update_params = guarded_update_params

    @staticmethod
    def _non_finite_on_any_rank(loss: torch.Tensor) -> bool:
        flag = (~torch.isfinite(loss.detach())).any().to(torch.float32).reshape(1)
        if is_distributed():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs: Optional[dict] = None) -> None:
        if not self._step_was_skipped:
            self._consecutive = 0
            return
        self._step_was_skipped = False
        self._consecutive += 1
        terms = non_finite_terms(outputs)
        what = (', '.join(f'{key}={value}' for key, value in terms.items()) if terms
                else 'on another rank (all loss terms are finite here)')
        where = f'iteration {runner.iter + 1}'
        if not isinstance(runner.train_loop, IterBasedTrainLoop):
            where += f' (epoch {runner.epoch + 1}, batch {batch_idx + 1})'
        if self.action == 'stop' or self._consecutive > self.max_consecutive_skips:
            last = runner.message_hub.get_info('last_ckpt')
            resume = f'the last checkpoint, {last}, is where --resume starts' if last else 'no checkpoint was written'
            reason = ('' if self.action == 'stop' else
                      f', {self._consecutive} non-finite losses in a row (max_consecutive_skips='
                      f'{self.max_consecutive_skips})')
            raise NonFiniteLossError(
                f'non-finite loss at {where}: {what}{reason}. The step was not applied and training stops; {resume}. '
                "Lower the learning rate or check the data; to skip such steps instead, set "
                "default_hooks.non_finite_loss.action='skip'.")
        skipped = runner.message_hub.get_info('skipped_steps', 0) + 1
        runner.message_hub.update_info('skipped_steps', skipped)
        runner.message_hub.update_scalar('train/skipped_steps', skipped)
        runner.logger.warning(f'non-finite loss at {where}: {what}; the step was skipped '
                              f'({skipped} skipped so far)')
        for key in [key for key, value in (outputs or {}).items() if not _finite(value)]:
            del outputs[key]  # keeps NaN out of the logged averages
