"""Methods and their registry. Importing this package registers every built-in method."""

from . import (  # noqa: F401 - registration side effect
    ban,
    bce,
    c2ae,
    cskd,
    kdtea,
    l2d,
    ls,
    mpvae,
    multiround,
    pll,
    pskd,
    raskd,
    skdtea,
    tea,
    tfkd,
)
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
