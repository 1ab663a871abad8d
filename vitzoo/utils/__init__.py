from .download import download_checkpoint, resolve_checkpoint

__all__ = ['download_checkpoint', 'resolve_checkpoint']
