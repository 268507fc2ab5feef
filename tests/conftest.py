import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # 2-core CI machine: one intra-op thread keeps timings and float reductions reproducible
    torch.set_num_threads(1)
    yield
