"""Intra-op thread count for training.

On the 2-core machines this project targets, small models are slower with 2 threads than with 1
(tiny ops pay more for synchronisation than they gain); large ones gain from all cores. The
threshold below comes from `benchmarks/` (see BENCHMARKS.md, "Threads").
"""

from __future__ import annotations

import os

SMALL_D_MODEL = 128


def auto_threads(d_model: int) -> int:
    """1 thread for d_model <= SMALL_D_MODEL, else every available core."""
    if d_model <= SMALL_D_MODEL:
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
