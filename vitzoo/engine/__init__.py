from .runtime import prepare_runtime, replace_syncbn

__all__ = ['prepare_runtime', 'replace_syncbn']
