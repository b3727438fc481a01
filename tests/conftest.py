"""Test-session settings: one intra-op thread per process (tiny tensors are far slower with more
threads on 2-core machines, and pytest-xdist already runs one worker per core)."""

import torch

torch.set_num_threads(1)
