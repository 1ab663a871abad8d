from .runtime import build_runner, prepare_runtime, replace_syncbn, shutdown_distributed

__all__ = ['build_runner', 'prepare_runtime', 'replace_syncbn', 'shutdown_distributed']
