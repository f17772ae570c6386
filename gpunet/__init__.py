"""gpunet: a 784-h-10 network for MNIST with hand-derived gradients, on NumPy or CuPy."""

from typing import Any

from gpunet.version import __version__

__all__ = ["MLPClassifier", "__version__"]


def __getattr__(name: str) -> Any:
    """`gpunet.MLPClassifier`, imported on first use, so `import gpunet` does not import scikit-learn."""
    if name == "MLPClassifier":
        from gpunet.estimator import MLPClassifier

        return MLPClassifier
    raise AttributeError(f"module 'gpunet' has no attribute {name!r}")
