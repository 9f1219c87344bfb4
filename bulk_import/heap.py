"""The C heap of a ``bulk-import`` process: large buffers get mappings of their own.

CPython hands every object over 512 bytes to the C library's ``malloc``. glibc serves a request
from its heaps unless it is at least a threshold, which it raises to the size of any such block
once freed. After the first CSV block of a run (a few MB, copied on its way to polars) was freed,
every later block comes from the heap of the thread that read it, and the holes they leave there
grow with the rows read: a run's resident memory would creep up by some 5 MiB per million rows.
With the threshold fixed, each large block is mapped and given back when freed, whatever the
run's length, for the kernel's fresh pages (a few percent of the CPU that reading a row costs).
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Final

#: glibc's ``mallopt`` parameter for the size from which a block is mapped on its own.
_M_MMAP_THRESHOLD: Final = -3
#: CSV blocks and the ledger are mapped; a batch's lists (256 KiB) stay in the heap, reused.
MMAP_THRESHOLD: Final = 1 << 20


def map_large_blocks() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD`; False where the C library is another."""
    if sys.platform != "linux":
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, ValueError, AttributeError):
        return False
