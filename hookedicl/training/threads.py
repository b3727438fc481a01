"""Intra-op thread count for training.

Measured on the 2-core machines this project targets (BENCHMARKS.md, section 5 of the model
benchmark): on a quiet machine 2 threads beat 1 by 1.35x for the small GPT-2 and 1.68x at the
standard size, so the default is every available core. When other processes keep the cores
busy, tiny ops with 2 threads were up to 10-20x slower than with 1 (threads wait for a busy
core); set `threads: 1` in the config (or `torch.set_num_threads(1)`) on a shared machine.
"""

from __future__ import annotations

import os


def auto_threads(d_model: int | None = None) -> int:
    """Every core available to this process (see the module docstring for when to use 1)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
