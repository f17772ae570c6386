"""Shared fixtures: a `backend` parametrised over cpu and cuda (cuda marked `gpu`, skipped without a GPU)."""

import numpy as np
import pytest

from gpunet.backend import get_backend
from gpunet.errors import GpunetError


def cuda_or_skip(dtype: str = "float32"):
    try:
        return get_backend("cuda", dtype)
    except GpunetError as e:
        pytest.skip(f"no usable CUDA device: {e}")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def backend(request):
    """A float32 backend for each device."""
    return get_backend("cpu") if request.param == "cpu" else cuda_or_skip()


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def backend64(request):
    """A float64 backend for each device (gradient checks)."""
    return get_backend("cpu", "float64") if request.param == "cpu" else cuda_or_skip("float64")


@pytest.fixture
def gpu():
    """The float32 cuda backend, or a skip (use with @pytest.mark.gpu)."""
    return cuda_or_skip()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
