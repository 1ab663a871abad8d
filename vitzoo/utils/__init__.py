from .download import download_checkpoint, resolve_checkpoint
from .setup_env import register_all_modules

__all__ = ['download_checkpoint', 'resolve_checkpoint', 'register_all_modules']
