"""mlkd: multi-label classification with (self-)knowledge distillation."""

__version__ = "0.1.0"
