"""Moved to ``alignkit.models.device`` (device placement is a model concern); kept so code
written against the old path still imports."""

from alignkit.models.device import autocast_dtype, describe, module_device, pick_device, precision

__all__ = ["autocast_dtype", "describe", "module_device", "pick_device", "precision"]
