"""mlkd: multi-label classification with (self-)knowledge distillation.

Three lines for a practitioner::

    from mlkd import SKDTEAClassifier
    clf = SKDTEAClassifier().fit(X, Y)
    clf.predict(X_new)

The names below, and the submodules (``mlkd.data``, ``mlkd.methods``, …), are imported on first use (PEP 562),
so ``import mlkd`` and the ``mlkd --help`` of the command line do not pay for torch and scikit-learn until a
model is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: public name → the submodule that defines it
_EXPORTS = {
    "MultiLabelClassifier": "estimator", "SKDTEAClassifier": "estimator", "C2AEClassifier": "estimator",
    "MPVAEClassifier": "estimator", "KDTEAClassifier": "estimator", "DistillClassifier": "estimator",
    "load_model": "io", "save_model": "io",
}

__all__ = [
    "MultiLabelClassifier", "SKDTEAClassifier", "C2AEClassifier", "MPVAEClassifier", "KDTEAClassifier",
    "DistillClassifier", "load_model", "save_model", "__version__",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        # a submodule (mlkd.data, mlkd.methods, …) is imported on first use too, as after 'import mlkd.data'
        if name in _submodules():
            return importlib.import_module(f".{name}", __name__)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later lookups find it without this hook
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_submodules()})


def _submodules(path=__path__) -> set[str]:
    """The public submodules of the package at ``path`` (its files, nothing imported): a name from anywhere else
    ('nosuch.x', '') is an AttributeError, never an import of it."""
    import pkgutil

    return {m.name for m in pkgutil.iter_modules(path) if not m.name.startswith("_")}


if TYPE_CHECKING:
    from .estimator import (
        C2AEClassifier,
        DistillClassifier,
        KDTEAClassifier,
        MPVAEClassifier,
        MultiLabelClassifier,
        SKDTEAClassifier,
    )
    from .io import load_model, save_model
