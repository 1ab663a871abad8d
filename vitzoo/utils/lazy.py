"""Package attributes that import their submodule on first use, so importing the package stays light."""
import importlib
import sys
from typing import Callable, Dict, List, Tuple


def lazy_attributes(package: str, sources: Dict[str, str]) -> Tuple[Callable[[str], object], Callable[[], List[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose ``sources`` map names to (relative) modules."""

    def __getattr__(name: str):
        if name not in sources:
            raise AttributeError(f'module {package!r} has no attribute {name!r}')
        value = getattr(importlib.import_module(sources[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> List[str]:
        return sorted(set(vars(sys.modules[package])) | set(sources))

    return __getattr__, __dir__
