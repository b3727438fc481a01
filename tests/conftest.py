"""Test-session settings.

* One intra-op thread per process: tiny tensors are far slower with more threads on 2-core
  machines, and pytest-xdist already runs one worker per core.
* Property-based tests are deterministic by default so the suite cannot turn red by chance;
  `HYPOTHESIS_PROFILE=explore pytest tests/test_fuzz.py` draws fresh random cases.
"""

import os

import pytest
import torch
from hypothesis import settings

torch.set_num_threads(1)

settings.register_profile("default", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def one_thread():
    """Every test starts at one intra-op thread, whatever an earlier test set."""
    torch.set_num_threads(1)
