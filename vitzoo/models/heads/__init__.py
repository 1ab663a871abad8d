from .lvt_head import LVTClsHead  # noqa: F401
