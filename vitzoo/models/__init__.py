from .backbones import *  # noqa: F401,F403
from .checkpoint import convert_state_dict, register_converter, unwrap_state_dict
from .classifiers import *  # noqa: F401,F403
from .heads import *  # noqa: F401,F403
from .layers import set_fused_attn

__all__ = ['convert_state_dict', 'register_converter', 'unwrap_state_dict', 'set_fused_attn']
