"""gpunet: a 784-h-10 network for MNIST with hand-derived gradients, on NumPy or CuPy.

The public API, each name imported on first use (so `import gpunet` stays light and scikit-learn is imported only
for `MLPClassifier` and `MLPRegressor`)::

    from gpunet import get_backend, MLP, TrainStep, load_mnist, load_model, MLPClassifier, MLPRegressor
"""

from importlib import import_module
from typing import Any

from gpunet.version import __version__

PUBLIC = {
    "get_backend": "gpunet.core.backend", "Backend": "gpunet.core.backend",
    "MLP": "gpunet.core.model", "one_hot": "gpunet.core.model",
    "make_optimizer": "gpunet.core.optim", "learning_rate": "gpunet.core.optim",
    "TrainStep": "gpunet.core.step",
    "load_mnist": "gpunet.data.load", "load_dataset": "gpunet.data.load", "DeviceData": "gpunet.data.load",
    "hold_out": "gpunet.data.validation",
    "Config": "gpunet.runs.config", "load_config": "gpunet.runs.config",
    "train": "gpunet.runs.train", "evaluate": "gpunet.runs.evaluate",
    "load_model": "gpunet.runs.store", "save_model": "gpunet.runs.store",
    "save_onnx": "gpunet.runs.export", "plot_run": "gpunet.runs.plots",
    "MLPClassifier": "gpunet.sklearn.estimator", "MLPRegressor": "gpunet.sklearn.estimator",
}
__all__ = [*PUBLIC, "__version__"]


def __getattr__(name: str) -> Any:
    if name in PUBLIC:
        return getattr(import_module(PUBLIC[name]), name)
    raise AttributeError(f"module 'gpunet' has no attribute {name!r}")
