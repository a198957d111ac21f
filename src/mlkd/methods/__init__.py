"""Methods and their registry. Importing this package registers every built-in method."""

from . import bce, c2ae, kdtea, ls, mpvae, skdtea, tea  # noqa: F401 - registration side effect
from .base import (
    REGISTRY,
    Batch,
    Method,
    MethodConfig,
    StepContext,
    StepOutput,
    build_method,
    config_fields,
    make_config,
    method_class,
    register,
)

__all__ = [
    "REGISTRY", "Batch", "Method", "MethodConfig", "StepContext", "StepOutput", "build_method",
    "config_fields", "make_config", "method_class", "register",
]
