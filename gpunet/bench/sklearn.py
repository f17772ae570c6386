"""gpunet.MLPClassifier against sklearn.neural_network.MLPClassifier: fit seconds and test accuracy.

    python -m gpunet.bench.sklearn [--recipe defaults|momentum] [--data-dtypes float32,float64]
                                   [--epochs-mnist 5] [--epochs-digits 30] [--repeats 3] [--threads N]
                                   [--mnist-train 20000] [--batch-sizes auto]

Both estimators get the same parameters: by default scikit-learn's defaults (100 ReLU units, Adam at 0.001,
alpha 1e-4, batch min(200, n)), or with `--recipe momentum` the recipe of `gpunet train` (128 ReLU units, SGD with
classical momentum 0.9, learning rate 0.1, no L2), each for a fixed number of epochs (tol and n_iter_no_change
set so neither stops early), on the same arrays in each of --data-dtypes: both compute in the features' dtype.
Datasets: MNIST (the first 20,000 training images, the full 10,000 test images; pixels / 255) and
scikit-learn's digits (pixels / 16; a stratified 75/25 split). Each fit runs once to warm up, then the
contenders take turns `repeats` times; the table shows the median seconds and the last test accuracy, and
gpunet's speed-up over scikit-learn. With a usable GPU, gpunet on cuda is timed too.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Any, Callable

import numpy as np

HIDDEN, LR, MOMENTUM = 128, 0.1, 0.9


def datasets(dtype: str = "float32", mnist_train: int = 20000) -> dict[str, tuple[np.ndarray, ...]]:
    """name -> (X_train, X_test, y_train, y_test), features of `dtype`."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from gpunet.data.load import load_mnist, to_features

    train, test = load_mnist()
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X / 16, y, test_size=0.25, random_state=0, stratify=y)
    return {
        f"mnist {mnist_train // 1000}k": (to_features(train.images[:mnist_train]).astype(dtype),
                                          to_features(test.images).astype(dtype),
                                          train.labels[:mnist_train], test.labels),
        "digits": (X_tr.astype(dtype), X_te.astype(dtype), y_tr, y_te),
    }


RECIPES = {
    # scikit-learn's defaults: 100 ReLU, Adam at 0.001, alpha 1e-4, batch min(200, n), Nesterov unused.
    "defaults": {},
    # momentum SGD as `gpunet train` runs it: 128 ReLU, classical momentum 0.9, lr 0.1, no L2.
    "momentum": dict(hidden_layer_sizes=(HIDDEN,), solver="sgd", momentum=MOMENTUM, nesterovs_momentum=False,
                     learning_rate_init=LR, alpha=0.0),
}


def contenders(epochs: int, cuda: bool, batch: int | str = "auto",
               recipe: str = "defaults") -> dict[str, Callable[[], Any]]:
    """name -> a function making a fresh, unfitted classifier: both estimators with the same parameters (the
    recipe's, a fixed number of epochs, batch size `batch`), gpunet's on each device."""
    from sklearn.neural_network import MLPClassifier as SkMLP

    from gpunet.sklearn.estimator import MLPClassifier

    params = dict(RECIPES[recipe], batch_size=batch, max_iter=epochs, tol=0.0, n_iter_no_change=epochs + 1,
                  random_state=0)
    makers = {"sklearn cpu": lambda: SkMLP(**params), "gpunet cpu": lambda: MLPClassifier(device="cpu", **params)}
    if cuda:
        makers["gpunet cuda"] = lambda: MLPClassifier(device="cuda", **params)
    return makers


def time_fits(makers: dict[str, Callable[[], Any]], data: tuple[np.ndarray, ...],
              repeats: int) -> dict[str, tuple[float, float]]:
    """name -> (median fit seconds, test accuracy of the last fit). After a warm-up fit each, the contenders
    take turns `repeats` times, so a change in the machine's load falls on all of them alike."""
    X_tr, X_te, y_tr, y_te = data
    seconds: dict[str, list[float]] = {name: [] for name in makers}
    fitted: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: the epochs are fixed on purpose
        for i in range(repeats + 1):
            for name, make in makers.items():
                clf = make()
                t0 = time.perf_counter()
                clf.fit(X_tr, y_tr)  # gpunet's fit ends with a device -> host copy of the weights: synchronised
                if i:
                    seconds[name].append(time.perf_counter() - t0)
                fitted[name] = clf
    return {name: (statistics.median(seconds[name]), float(np.mean(fitted[name].predict(X_te) == y_te)))
            for name in makers}


def cuda_usable() -> bool:
    from gpunet.core.backend import get_backend
    from gpunet.errors import GpunetError

    try:
        get_backend("cuda")
    except GpunetError:
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gpunet.bench.sklearn", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs-mnist", type=int, default=5)
    parser.add_argument("--epochs-digits", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mnist-train", type=int, default=20000, help="MNIST training images used.")
    parser.add_argument("--recipe", choices=tuple(RECIPES), default="defaults",
                        help="scikit-learn's defaults, or momentum SGD as gpunet train runs it.")
    parser.add_argument("--batch-sizes", default="auto", help="Comma-separated batch sizes ('auto' or integers).")
    parser.add_argument("--threads", type=int, default=0, help="Limit the BLAS threads (0: leave as is).")
    parser.add_argument("--data-dtypes", default="float32,float64",
                        help="Comma-separated float types of the features, each timed in turn.")
    args = parser.parse_args(argv)
    try:
        batches = [b if b == "auto" else int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        batches = []
    if not batches or min((b for b in batches if b != "auto"), default=1) < 1:
        parser.error(f"--batch-sizes {args.batch_sizes!r}: give 'auto' or positive integers, e.g. auto,32,128")
    dtypes = args.data_dtypes.split(",")
    if not set(dtypes) <= {"float32", "float64"}:
        parser.error(f"--data-dtypes {args.data_dtypes!r}: give float32, float64 or both")
    if args.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads, user_api="blas")
    cuda = cuda_usable()
    from gpunet.core.backend import get_backend
    from gpunet.bench.report import machine

    m = machine(get_backend("cpu"), None)
    print(f"CPU: {m['cpu']}, {m['cores']} cores; BLAS {m['blas']}")
    if cuda:
        print(f"GPU: {get_backend('cuda').describe()}")
    print(f"recipe: {args.recipe} ({RECIPES[args.recipe] or 'scikit-learn defaults'}), both estimators alike")
    print(f"{'dataset':<10} {'dtype':<8} {'epochs':>6} {'batch':>5} {'contender':<12} {'fit s':>8} {'test acc':>9} "
          f"{'speed-up':>9}")
    for dtype in dtypes:
        for name, data in datasets(dtype, args.mnist_train).items():
            epochs = args.epochs_digits if name == "digits" else args.epochs_mnist
            for batch in batches:
                results = time_fits(contenders(epochs, cuda, batch, args.recipe), data, args.repeats)
                base = results["sklearn cpu"][0]
                for who, (seconds, acc) in results.items():
                    print(f"{name:<10} {dtype:<8} {epochs:>6} {batch:>5} {who:<12} {seconds:>8.3f} {100 * acc:>8.2f}% "
                          f"{base / seconds:>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
