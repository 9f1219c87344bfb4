"""A stand-in for the platform's job server, for demos, tests and benchmarks without the platform.

:class:`ProfileStore` applies ``database_import`` requests with the documented matching semantics;
:func:`serve` answers them over the real broker, with fault knobs to misbehave on purpose.
"""

from __future__ import annotations

from .profiles import ERROR_CODES, TEMPORARY_FAILURE, ProfileStore, error_reply
from .server import EmulatorCounts, EmulatorSettings, Fate, Faults, open_store, serve, serve_until_stopped

__all__ = [
    "ERROR_CODES",
    "TEMPORARY_FAILURE",
    "EmulatorCounts",
    "EmulatorSettings",
    "Fate",
    "Faults",
    "ProfileStore",
    "error_reply",
    "open_store",
    "serve",
    "serve_until_stopped",
]
