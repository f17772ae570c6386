"""gpunet.MLPClassifier against sklearn.neural_network.MLPClassifier: fit seconds and test accuracy.

    python -m gpunet.bench.sklearn [--epochs-mnist 5] [--epochs-digits 30] [--repeats 3] [--threads N]
                                   [--data-dtype float32|float64] [--mnist-train 20000] [--batch-sizes 128]

Both fit the same architecture (n_features -> 128 ReLU -> n_classes softmax) with the same recipe: SGD with
momentum 0.9 (classical, not Nesterov), constant learning rate 0.1, batch 128 (or each of --batch-sizes),
shuffled every epoch, no L2 penalty, a fixed number of epochs (tol and n_iter_no_change set so neither stops
early), on the same arrays: float32 by default, which scikit-learn keeps in float32, so both compute in the
same precision; with `--data-dtype float64` scikit-learn computes in float64 and gpunet (dtype="float32")
still in float32. Datasets: MNIST (the first 20,000 training images, the full 10,000 test images; pixels /
255) and scikit-learn's digits (pixels / 16; a stratified 75/25 split). Each fit runs once to warm up, then
the contenders take turns `repeats` times; the table shows the median seconds and the last test accuracy,
and gpunet's speed-up over scikit-learn. With a usable GPU, gpunet on cuda is timed too.
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


def contenders(epochs: int, cuda: bool, batch: int = 128) -> dict[str, Callable[[], Any]]:
    """name -> a function making a fresh, unfitted classifier with the shared recipe at batch size `batch`."""
    from sklearn.neural_network import MLPClassifier as SkMLP

    from gpunet.sklearn.estimator import MLPClassifier

    def gpunet_on(device: str) -> Callable[[], Any]:
        return lambda: MLPClassifier(hidden_layer_sizes=(HIDDEN,), optimizer="momentum", momentum=MOMENTUM,
                                     learning_rate_init=LR, batch_size=batch, max_iter=epochs, tol=0.0,
                                     n_iter_no_change=epochs + 1, random_state=0, device=device)

    makers = {
        "sklearn cpu": lambda: SkMLP(hidden_layer_sizes=(HIDDEN,), solver="sgd", momentum=MOMENTUM,
                                     nesterovs_momentum=False, learning_rate="constant", learning_rate_init=LR,
                                     batch_size=batch, max_iter=epochs, alpha=0.0, tol=0.0,
                                     n_iter_no_change=epochs + 1, early_stopping=False, random_state=0),
        "gpunet cpu": gpunet_on("cpu"),
    }
    if cuda:
        makers["gpunet cuda"] = gpunet_on("cuda")
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
    parser.add_argument("--batch-sizes", default="128", help="Comma-separated batch sizes, each timed in turn.")
    parser.add_argument("--threads", type=int, default=0, help="Limit the BLAS threads (0: leave as is).")
    parser.add_argument("--data-dtype", choices=("float32", "float64"), default="float32",
                        help="The features' float type as both classifiers receive them.")
    args = parser.parse_args(argv)
    try:
        batches = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        parser.error(f"--batch-sizes {args.batch_sizes!r}: give positive integers, e.g. 32,128")
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
    print(f"recipe: {HIDDEN} hidden ReLU, SGD momentum {MOMENTUM}, lr {LR}, no L2, {args.data_dtype} data")
    print(f"{'dataset':<10} {'epochs':>6} {'batch':>5} {'contender':<12} {'fit s':>8} {'test acc':>9} {'speed-up':>9}")
    for name, data in datasets(args.data_dtype, args.mnist_train).items():
        epochs = args.epochs_digits if name == "digits" else args.epochs_mnist
        for batch in batches:
            results = time_fits(contenders(epochs, cuda, batch), data, args.repeats)
            base = results["sklearn cpu"][0]
            for who, (seconds, acc) in results.items():
                print(f"{name:<10} {epochs:>6} {batch:>5} {who:<12} {seconds:>8.3f} {100 * acc:>8.2f}% "
                      f"{base / seconds:>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
