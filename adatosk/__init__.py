"""AdaTosk: adaptive temporal soft mask for efficient dynamic facial expression recognition.

``import adatosk`` registers the models in timm's registry when timm is imported (at once if it already is), so that
``timm.create_model("adatosk_vit_base_patch16_160", num_classes=7)`` works after ``import adatosk`` while the package
itself imports neither torch nor timm: ``adatosk --help`` and every command's start-up load only what they use.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

__version__ = "0.1.0"

_MODELS = "adatosk.models"


class _RegisterOnTimmImport(importlib.abc.MetaPathFinder):
    """Finds ``timm`` through the other finders and imports :mod:`adatosk.models` (the registration) right after
    timm's own module has run; then leaves ``sys.meta_path``."""

    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if name != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)  # the other finders' spec (self has left sys.meta_path)
        if spec is None or spec.loader is None:
            return spec
        run_timm = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run_timm(module)
            importlib.import_module(_MODELS)

        spec.loader.exec_module = exec_module
        return spec


if "timm" in sys.modules:
    importlib.import_module(_MODELS)
elif not any(isinstance(finder, _RegisterOnTimmImport) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterOnTimmImport())
