"""tests/distill: torch runs single-threaded (the tensors are tiny; see tests/conftest.py)."""

import torch

torch.set_num_threads(1)
