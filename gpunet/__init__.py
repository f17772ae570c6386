"""gpunet: a 784-h-10 network for MNIST with hand-derived gradients, on NumPy or CuPy."""

__version__ = "0.1.0"
