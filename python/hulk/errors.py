"""The one exception tree of hulk.

The classes are created in the native core under `hulk.errors` and re-exported here; Python-only
errors subclass the same base, `HulkError`, so `except HulkError` catches everything hulk raises.
"""

from hulk._native import BreakerOpen, HulkError, QueueClosed, QueueEmpty, QueueFull

__all__ = ["BreakerOpen", "HulkError", "QueueClosed", "QueueEmpty", "QueueFull"]
