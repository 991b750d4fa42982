import pytest


@pytest.fixture
def one_thread():
    """Tiny models run faster and steadier on one thread than on two contended ones."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
