from .runtime import prepare_runtime, replace_syncbn, shutdown_distributed

__all__ = ['prepare_runtime', 'replace_syncbn', 'shutdown_distributed']
