"""A stand-in for the platform's job server, for demos, tests and benchmarks without the platform."""

from __future__ import annotations

from .profiles import ERROR_CODES, ProfileStore
from .server import EmulatorCounts, EmulatorSettings, serve

__all__ = ["ERROR_CODES", "EmulatorCounts", "EmulatorSettings", "ProfileStore", "serve"]
