"""A stand-in for the platform's job server, for demos, tests and benchmarks without the platform.

:class:`ProfileStore` applies ``database_import`` requests with the documented matching semantics,
and :class:`ApiService` the ``api_req`` calls that import profiles (``import_batch``, ``add_batch``,
``update_batch``, ``import``) on the same store; :func:`serve` answers both over the real broker,
with fault knobs to misbehave on purpose.
"""

from __future__ import annotations

from .api import API_ERROR_CODES, ApiAnswer, ApiService
from .profiles import ERROR_CODES, TEMPORARY_FAILURE, ProfileStore, error_reply
from .server import EmulatorCounts, EmulatorSettings, Fate, Faults, open_store, serve, serve_until_stopped

__all__ = [
    "API_ERROR_CODES",
    "ERROR_CODES",
    "TEMPORARY_FAILURE",
    "ApiAnswer",
    "ApiService",
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
