"""Test-session settings: one intra-op thread per process (tiny tensors are far slower with more
threads on 2-core machines, and pytest-xdist already runs one worker per core)."""

import torch

torch.set_num_threads(1)

# Property-based tests are deterministic by default so the suite cannot turn red by chance;
# `HYPOTHESIS_PROFILE=explore pytest tests/test_fuzz.py` draws fresh random cases.
import os

from hypothesis import settings

settings.register_profile("default", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
