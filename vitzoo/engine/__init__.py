from .hooks import CheckpointHook, NonFiniteLossError, NonFiniteLossHook, latest_checkpoint
from .runtime import build_runner, prepare_runtime, replace_syncbn, shutdown_distributed

__all__ = ['CheckpointHook', 'NonFiniteLossError', 'NonFiniteLossHook', 'build_runner', 'latest_checkpoint',
           'prepare_runtime', 'replace_syncbn', 'shutdown_distributed']
