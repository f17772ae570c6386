"""`MLPClassifier`: the scikit-learn estimator API on gpunet's equations, optimizers and training step.

Training runs `gpunet.core.step.TrainStep` (the step `gpunet train` runs) with `gpunet.core.optim`, on NumPy or CuPy
through a `Backend`; this module only adds the estimator's bookkeeping: input checks, label encoding, the
epoch loop with scikit-learn's stopping rules (`tol`, `n_iter_no_change`, `early_stopping`), and host copies of
the weights. Features are used as given (no /255 scaling). The data moves to the device once per `fit`; the
loss (and the validation score) is read back once per epoch. CuPy arrays stay on the GPU, and predictions come
back as CuPy arrays for them. scikit-learn is an optional extra (pip install 'gpunet[sklearn]').
"""

from __future__ import annotations

import math
import numbers
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d, validate_data

from gpunet.core.backend import DEVICES, DTYPES, Backend, get_backend
from gpunet.core.model import MLP, one_hot
from gpunet.core.optim import OPTIMIZERS, SCHEDULES, learning_rate, make_optimizer
from gpunet.core.step import TrainStep
from gpunet.core.threads import BlasThreads, blas_threads
from gpunet.runs.store import MAX_PARAMETERS

Array = Any  # numpy.ndarray or cupy.ndarray


def whole(v: Any) -> bool:
    """An integer and not a bool (True is not a width or a count)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def on_gpu(a: Any) -> bool:
    """Whether `a` is a CuPy array (detected without importing CuPy)."""
    return type(a).__module__.startswith("cupy")


class MLPClassifier(ClassifierMixin, BaseEstimator):
    """A multilayer perceptron classifier: ReLU hidden layers, softmax output, mean cross-entropy loss.

    Parameters named as in `sklearn.neural_network.MLPClassifier` mean the same thing there. Others:
    optimizer: "gd", "momentum" (v := momentum v + dW; W -= lr v) or "adam".
    learning_rate: the schedule, "constant" or "cosine" (decayed to 0 over max_iter epochs; fit only).
    batch_size: samples per step, or "auto" for min(200, n_samples) as in scikit-learn.
    device: "cpu" (NumPy), "cuda" (CuPy) or "auto" (cuda when usable). CuPy inputs always run on the GPU.
    dtype: "float32" or "float64", the arrays' float type on the device.
    n_threads: the BLAS threads of the training steps on the CPU, "auto" (gpunet.core.threads) or a count.

    Fitted attributes: classes_, n_features_in_ (and feature_names_in_), coefs_ and intercepts_ (host NumPy,
    coefs_[l] of shape (n_l, n_{l+1})), n_iter_, t_ (samples seen), loss_, loss_curve_, best_loss_ (None with
    early stopping), validation_scores_ and best_validation_score_ (None without), device_ ("cpu" or "cuda"),
    threads_ (the BLAS threads of the last fit: what was asked, the policy, the count used, as in metrics.json).
    """

    def __init__(self, hidden_layer_sizes: Any = (128,), optimizer: str = "momentum", learning_rate: str = "constant",
                 learning_rate_init: float = 0.01, momentum: float = 0.9, batch_size: int | str = 128,
                 max_iter: int = 200, tol: float = 1e-4, n_iter_no_change: int = 10, early_stopping: bool = False,
                 validation_fraction: float = 0.1, random_state: Any = None, verbose: bool = False,
                 device: str = "auto", dtype: str = "float32", n_threads: int | str = "auto"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.momentum = momentum
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.verbose = verbose
        self.device = device
        self.dtype = dtype
        self.n_threads = n_threads

    # --- fitting -----------------------------------------------------------------------------------------------

    def fit(self, X: Array, y: Array) -> "MLPClassifier":
        """Train from new initial weights for up to `max_iter` epochs (fewer when the stopping rule says so)."""
        hidden = self._check_params()
        X, y = self._validate(X, y, reset=True)
        check_classification_targets(y)
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        backend = self._backend_for(X)
        seed = self._seed()
        self._start(backend, (X.shape[1], *hidden, len(self.classes_)), seed)
        Xd, yd = backend.asarray(X), backend.asarray(y_enc, dtype=np.int32)  # (n, n_features), (n,): one move
        val = None
        if self.early_stopping:
            train_idx, val_idx = train_test_split(np.arange(len(y_enc)), test_size=self.validation_fraction,
                                                  random_state=seed, stratify=y_enc)
            ti, vi = backend.asarray(train_idx, dtype=np.int64), backend.asarray(val_idx, dtype=np.int64)
            Xd, yd, val = Xd[ti], yd[ti], (Xd[vi], yd[vi])
        step = self._train_step(Xd, yd)
        self.loss_curve_: list[float] = []
        self.best_loss_ = None if self.early_stopping else np.inf
        self.validation_scores_: list[float] | None = [] if self.early_stopping else None
        self.best_validation_score_ = -np.inf if self.early_stopping else None
        best_state, no_improvement = None, 0
        steps = math.ceil(len(yd) / self._batch(len(yd)))
        blas = self._threads(backend, len(yd))
        for epoch in range(1, self.max_iter + 1):
            with blas:
                loss, score = self._epoch(step, seed, epoch, lambda s: learning_rate(
                    self.learning_rate_init, self.learning_rate, (epoch - 1) * steps + s, self.max_iter * steps),
                    blas, val)
            if self.early_stopping:  # scikit-learn's rule: no gain of tol in the validation accuracy
                self.validation_scores_.append(score)
                no_improvement = no_improvement + 1 if score < self.best_validation_score_ + self.tol else 0
                if score > self.best_validation_score_:
                    self.best_validation_score_, best_state = score, self._net.state_dict()
            else:  # or no drop of tol in the training loss
                no_improvement = no_improvement + 1 if loss > self.best_loss_ - self.tol else 0
                self.best_loss_ = min(self.best_loss_, loss)
            if no_improvement > self.n_iter_no_change:
                if self.verbose:
                    what = "Validation score" if self.early_stopping else "Training loss"
                    print(f"{what} did not improve more than tol={self.tol} for {self.n_iter_no_change} "
                          "consecutive epochs. Stopping.")
                break
        else:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                          "optimization hasn't converged yet.", ConvergenceWarning, stacklevel=2)
        if best_state is not None:  # early stopping keeps the weights of the best validation score
            for k, v in best_state.items():
                self._net.params[k][...] = backend.asarray(v)
        self._sync_host()
        return self

    def partial_fit(self, X: Array, y: Array, classes: Array | None = None) -> "MLPClassifier":
        """One epoch over (X, y) at the constant rate learning_rate_init, continuing from the current weights and
        optimizer state. The first call needs `classes`, all labels that any call will see."""
        first = not hasattr(self, "classes_")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        hidden = self._check_params()
        X, y = self._validate(X, y, reset=first)
        check_classification_targets(y)
        if classes is not None:  # on the host, CuPy arrays too
            classes = np.unique(classes.get() if on_gpu(classes) else np.asarray(classes))
        if first:
            self.classes_ = classes
            self.loss_curve_, self.best_loss_ = [], np.inf
            self.validation_scores_ = self.best_validation_score_ = None
        elif classes is not None and not np.array_equal(classes, self.classes_):
            raise ValueError(f"`classes={classes!r}` is not the same as on the first call to "
                             f"partial_fit, {self.classes_!r}.")
        unseen = np.setdiff1d(y, self.classes_)
        if unseen.size:
            raise ValueError(f"y has labels {unseen!r} not in classes {self.classes_!r}")
        backend = self._backend_for(X)
        if first:
            self._start(backend, (X.shape[1], *hidden, len(self.classes_)), self._seed())
        else:
            self._resume(backend)
        y_enc = np.searchsorted(self.classes_, y)
        step = self._train_step(backend.asarray(X), backend.asarray(y_enc, dtype=np.int32))
        blas = self._threads(backend, len(y_enc))
        with blas:
            loss, _ = self._epoch(step, self._seed_, self.n_iter_ + 1, lambda s: self.learning_rate_init, blas)
        self.best_loss_ = min(self.best_loss_, loss)
        self._sync_host()
        return self

    # --- prediction --------------------------------------------------------------------------------------------

    def predict_proba(self, X: Array) -> Array:
        """Class probabilities (n_samples, n_classes), columns in the order of classes_; CuPy for CuPy input."""
        P, backend = self._proba(X)
        return P if on_gpu(X) else backend.to_numpy(P)

    def predict(self, X: Array) -> Array:
        """The most probable class of each sample (n_samples,); a CuPy array for CuPy input with numeric labels."""
        P, backend = self._proba(X)
        idx = P.argmax(axis=1)  # (n,) on the device
        if on_gpu(X) and self.classes_.dtype.kind in "biuf":
            return backend.asarray(self.classes_, dtype=self.classes_.dtype)[idx]
        return self.classes_[backend.to_numpy(idx)]

    # --- weights and export ------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """The fitted weights as gpunet names them, W1, b1, ..., WL, bL (host NumPy)."""
        check_is_fitted(self)
        state = {}
        for l, (W, b) in enumerate(zip(self.coefs_, self.intercepts_), start=1):
            state[f"W{l}"], state[f"b{l}"] = W, b
        return state

    def export_onnx(self, path: str | Path) -> None:
        """Write the fitted network to `path` as ONNX (see gpunet.runs.export), classes_ as the class names."""
        from gpunet.runs.export import save_onnx

        save_onnx(Path(path), self.state_dict(), list(self.classes_), {"input_scale": "as given"})

    def __getstate__(self) -> dict[str, Any]:
        """Pickle host arrays only: the device net and optimizer become coefs_/intercepts_ and _opt_state."""
        state = dict(super().__getstate__())  # a copy: the base class may return __dict__ itself
        state.pop("_net", None)
        opt = state.pop("_opt", None)
        if opt is not None:
            state["_opt_state"] = opt.state_dict()
        return state

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        tags.input_tags.sparse = False
        return tags

    # --- internals ---------------------------------------------------------------------------------------------

    def _check_params(self) -> tuple[int, ...]:
        """Raise ValueError for a bad hyper-parameter; return the hidden widths as a tuple."""
        sizes = self.hidden_layer_sizes
        hidden = (sizes,) if isinstance(sizes, numbers.Integral) else tuple(sizes)
        if not all(whole(h) and h >= 1 for h in hidden):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got {sizes!r}")
        choices = {"optimizer": OPTIMIZERS, "learning_rate": SCHEDULES, "device": DEVICES, "dtype": DTYPES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: use one of {', '.join(allowed)}")
        b = self.batch_size
        if b != "auto" and not (whole(b) and b >= 1):
            raise ValueError(f"batch_size must be 'auto' or a positive integer, got {b!r}")
        for name, ok in (("learning_rate_init", self.learning_rate_init > 0), ("momentum", 0 <= self.momentum < 1),
                         ("max_iter", whole(self.max_iter) and self.max_iter >= 1), ("tol", self.tol >= 0),
                         ("n_iter_no_change", whole(self.n_iter_no_change) and self.n_iter_no_change >= 1),
                         ("validation_fraction", 0 < self.validation_fraction < 1),
                         ("n_threads", self.n_threads == "auto" or (whole(self.n_threads) and self.n_threads >= 1))):
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r} is out of range")
        return hidden

    def _validate(self, X: Array, y: Any = "no_validation", reset: bool = True) -> Any:
        """Checked X (and y as a 1-d host array). NumPy-like X goes through scikit-learn's validate_data; a CuPy X
        stays on the GPU, checked for shape, feature count and finite values there."""
        if not on_gpu(X):
            checked = validate_data(self, X, y, dtype=(np.float64, np.float32), reset=reset)
            self._check_range(checked if isinstance(y, str) and y == "no_validation" else checked[0])
            return checked
        if X.ndim != 2:
            raise ValueError(f"Expected a 2D array, got an array of shape {X.shape}")
        if reset:
            self.n_features_in_ = X.shape[1]
            self.__dict__.pop("feature_names_in_", None)
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but MLPClassifier is expecting "
                             f"{self.n_features_in_} features as input.")
        import cupy  # already imported: X is a CuPy array

        if X.dtype.kind == "f" and not bool(cupy.isfinite(X).all()):
            raise ValueError("Input X contains NaN or infinity.")
        self._check_range(X)
        if isinstance(y, str) and y == "no_validation":
            return X
        if y is None:
            raise ValueError("MLPClassifier requires y to be passed, but the target y is None.")
        y = column_or_1d(y.get() if on_gpu(y) else np.asarray(y), warn=True)
        check_consistent_length(X, y)
        return X, y

    def _check_range(self, X: Array) -> None:
        """ValueError when X holds a value beyond the range of `dtype`, the type the net computes in (it would
        become infinite there, and the probabilities NaN)."""
        big = float(np.finfo(self.dtype).max)
        if X.size and X.dtype.itemsize > np.dtype(self.dtype).itemsize and float(abs(X).max()) > big:
            raise ValueError(f"Input X contains values beyond the range of {self.dtype} (|x| > {big:.4g}); "
                             "scale the features, or use dtype='float64'.")

    def _proba(self, X: Array) -> tuple[Array, Backend]:
        """Probabilities (n, n_classes) on the device X runs on, and that backend; nothing is stored."""
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        backend = self._backend_for(X)
        net = self.__dict__.get("_net")
        if net is None or net.backend != backend:
            net = MLP.from_state_dict(backend, self.state_dict())
        P = net.predict_proba(backend.asarray(X))  # (n, k)
        if not backend.to_numpy(backend.xp.isfinite(P).all()):  # finite inputs that overflow inside the net
            raise ValueError(f"the probabilities are not finite in {self.dtype} for this X (its values are too "
                             "large for the net); scale the features, or use dtype='float64'.")
        return P, backend

    def _backend_for(self, X: Array) -> Backend:
        return get_backend("cuda" if on_gpu(X) else self.device, self.dtype)

    def _seed(self) -> int:
        """The integer seed of the initial weights and the shuffles: random_state itself when it is an int."""
        rs = self.random_state
        if isinstance(rs, numbers.Integral):
            return int(rs)
        return int(check_random_state(rs).randint(np.iinfo(np.int32).max))

    def _batch(self, n: int) -> int:
        return min(200 if self.batch_size == "auto" else self.batch_size, n)

    def _start(self, backend: Backend, sizes: tuple[int, ...], seed: int) -> None:
        """New initial weights and optimizer on `backend` (ValueError, before any is made, over MAX_PARAMETERS)."""
        params = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
        if params > MAX_PARAMETERS:
            raise ValueError(f"hidden_layer_sizes={self.hidden_layer_sizes!r} makes a net of {params:,} parameters "
                             f"for {sizes[0]} features and {sizes[-1]} classes, over the limit of {MAX_PARAMETERS:,}")
        self._net = MLP(backend, sizes, seed=seed)
        self._opt = make_optimizer(self.optimizer, backend, self._net.params, self.momentum)
        self._seed_ = seed
        self.__dict__.pop("_opt_state", None)
        self.n_iter_, self.t_, self.device_ = 0, 0, backend.name

    def _resume(self, backend: Backend) -> None:
        """The device net and optimizer on `backend`, rebuilt from the host state after unpickling or a move."""
        net = self.__dict__.get("_net")
        if net is not None and net.backend == backend:
            return
        opt_state = self._opt.state_dict() if net is not None else self.__dict__.pop("_opt_state", None)
        self._net = MLP.from_state_dict(backend, self.state_dict())
        self._opt = make_optimizer(self.optimizer, backend, self._net.params, self.momentum)
        if opt_state is not None:
            self._opt.load_state_dict(opt_state)
        self.device_ = backend.name

    def _threads(self, backend: Backend, n: int) -> BlasThreads:
        """The BLAS threads of a fit's steps over n samples (reported in threads_)."""
        blas = blas_threads(self.n_threads, backend, self._batch(n), self._net.sizes)
        self.threads_ = blas.report
        return blas

    def _train_step(self, X: Array, y: Array) -> TrainStep:
        """gpunet's training step over the device arrays X (n, n_features) and labels y (n,)."""
        xp = self._net.backend.xp
        return TrainStep(self._net, self._opt, X, one_hot(xp, y, len(self.classes_), self._net.backend.dtype), y)

    def _epoch(self, step: TrainStep, seed: int, epoch: int, lr_of_step: Any,
               blas: BlasThreads, val: tuple[Array, Array] | None = None) -> tuple[float, float | None]:
        """One shuffled pass of `step` over its data; the mean loss (and the validation accuracy), read at once."""
        backend = self._net.backend
        n = step.X.shape[0]
        loss_sum, _ = step.zero_sums()
        # A diverging run overflows; the check below reports it, so NumPy's warnings would only be noise.
        with np.errstate(over="ignore", invalid="ignore"):
            for s, idx in step.batches(self._batch(n), (seed, epoch)):
                with blas.step():
                    step(idx, lr_of_step(s))
            sums = [loss_sum / n]
            if val is not None:
                sums.append((self._net.predict(val[0]) == val[1]).mean())
            values = backend.to_floats(sums)  # the epoch's one device read
        loss = values[0]
        if not math.isfinite(loss):
            raise ValueError(f"the training loss became {loss} at epoch {epoch}; lower learning_rate_init "
                             f"(now {self.learning_rate_init:g}) or scale the features (e.g. StandardScaler)")
        self.n_iter_ += 1
        self.t_ += n
        self.loss_ = loss
        self.loss_curve_.append(loss)
        if self.verbose:
            print(f"Iteration {self.n_iter_}, loss = {loss:.8f}"
                  + ("" if val is None else f", validation score = {values[1]:.6f}"))
        return loss, (values[1] if val is not None else None)

    def _sync_host(self) -> None:
        """Host copies of the trained weights: coefs_[l] (n_l, n_{l+1}) and intercepts_[l] (n_{l+1},)."""
        state = self._net.state_dict()
        L = self._net.L
        self.coefs_ = [state[f"W{l}"] for l in range(1, L + 1)]
        self.intercepts_ = [state[f"b{l}"] for l in range(1, L + 1)]
        self.n_layers_, self.n_outputs_, self.out_activation_ = L + 1, self._net.sizes[-1], "softmax"
