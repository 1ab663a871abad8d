"""vitzoo's hooks, registered as ``vitzoo.<Name>`` and used by every vitzoo config (configs/_base_)."""
from .checkpoint import CheckpointHook, latest_checkpoint
from .non_finite import NonFiniteLossError, NonFiniteLossHook

__all__ = ['CheckpointHook', 'NonFiniteLossError', 'NonFiniteLossHook', 'latest_checkpoint']
