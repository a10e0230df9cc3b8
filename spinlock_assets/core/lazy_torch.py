"""``torch``, imported on first use.

Feature-family modules are imported when the Dagster definitions load (to read each family's name,
version and arrays), and a code server must not pay torch's import (seconds, hundreds of MB) for that.
They write ``from ..lazy_torch import torch`` and use ``torch.*`` as usual: the first attribute access
imports the real module. Annotations stay strings (``from __future__ import annotations``).
"""

from __future__ import annotations

import importlib
import types
from typing import Any

__all__ = ["torch"]


class _LazyModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module(self.__name__), name)


torch = _LazyModule("torch")
