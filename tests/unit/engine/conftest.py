"""Fixtures of the engine tests.

TEMPORARY: installs pure-Python stand-ins for native classes that have not landed on main yet.
"""

from __future__ import annotations

import _standins

import hulk._native as native

for _name in ("BackoffScheduler", "CircuitBreaker"):
    if not hasattr(native, _name):
        setattr(native, _name, getattr(_standins, _name))
