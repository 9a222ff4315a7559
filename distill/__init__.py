"""distill: label-free teacher–student training of RAW models from RGB models (ISP distillation)."""

__version__ = "0.1.0"
