from .lvt_head import LVTClsHead  # noqa: F401
from .norm_linear_head import NormLinearClsHead  # noqa: F401
from .pit_head import DistilledLinearClsHead  # noqa: F401
