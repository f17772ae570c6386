"""gpunet: a 784-h-10 network for MNIST with hand-derived gradients, on NumPy or CuPy."""

from gpunet.version import __version__

__all__ = ["__version__"]
