"""`MLPClassifier` and `MLPRegressor`: scikit-learn's neural-network estimators on gpunet's equations, CPU or GPU.

They take every parameter of `sklearn.neural_network.MLPClassifier` / `MLPRegressor`, with the same defaults and
meaning (solvers "sgd" and "adam"; "lbfgs" is refused), and fit what scikit-learn fits: the same Glorot-uniform
initial weights from the same `RandomState` draws, the same early-stopping split and shuffles (scikit-learn's own
functions on that `RandomState`, drawn on the host, so a GPU fit sees the same batches), the same updates (SGD
with momentum or Nesterov's, Adam, the L2 penalty `alpha` in loss and gradient, the "invscaling" and "adaptive"
rates) and the same `tol`/`n_iter_no_change` stopping. On the CPU in float64 the fitted `coefs_`, `loss_curve_`
and predictions are scikit-learn's to round-off. gpunet adds `device`, `dtype` (default: the input's) and
`n_threads`.

A step is gpunet's `TrainStep` (the step `gpunet train` runs) with the net's activation and output
(`gpunet.core.activations`); the data moves to the device once per fit, the loss (and the validation
predictions) come back once per epoch. CuPy inputs stay on the GPU. scikit-learn is an optional extra
(pip install 'gpunet[sklearn]').
"""

from __future__ import annotations

import math
import numbers
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, gen_batches, shuffle
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d, validate_data

from gpunet.core.activations import ACTIVATIONS
from gpunet.core.backend import DEVICES, DTYPES, Backend, get_backend
from gpunet.core.init import glorot_uniform
from gpunet.core.model import MLP, is_sparse
from gpunet.core.optim import SGD, Adam, Optimizer
from gpunet.core.step import TrainStep
from gpunet.core.threads import blas_threads
from gpunet.runs.store import MAX_PARAMETERS

Array = Any  # numpy.ndarray or cupy.ndarray
SOLVERS = ("sgd", "adam")
RATES = ("constant", "invscaling", "adaptive")


def whole(v: Any) -> bool:
    """An integer and not a bool (True is not a width or a count)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def on_gpu(a: Any) -> bool:
    """Whether `a` is a CuPy array (detected without importing CuPy)."""
    return type(a).__module__.startswith("cupy")


def to_device(backend: Backend, X: Any) -> Array:
    """X on the backend's device in its dtype: a dense array, or for scipy.sparse X a CSR matrix (scipy's on the
    CPU, cupyx.scipy.sparse's on cuda), so the first layer's products use the sparse matrix."""
    if not is_sparse(X):
        return backend.asarray(X)
    X = X.astype(backend.dtype).tocsr()  # rows gathered per batch: CSR
    if backend.name == "cpu" or on_gpu(X):
        return X
    import cupyx.scipy.sparse  # cuda: CuPy is there

    return cupyx.scipy.sparse.csr_matrix(X)


class BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, the fit loop, the device net, export."""

    _output = "identity"  # the output layer unless the targets say otherwise (classifier)

    def __init__(self, hidden_layer_sizes: Any = (100,), activation: str = "relu", *, solver: str = "adam",
                 alpha: float = 0.0001, batch_size: int | str = "auto", learning_rate: str = "constant",
                 learning_rate_init: float = 0.001, power_t: float = 0.5, max_iter: int = 200, shuffle: bool = True,
                 random_state: Any = None, tol: float = 1e-4, verbose: bool = False, warm_start: bool = False,
                 momentum: float = 0.9, nesterovs_momentum: bool = True, early_stopping: bool = False,
                 validation_fraction: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, n_iter_no_change: int = 10, max_fun: int = 15000, device: str = "auto",
                 dtype: str | None = None, n_threads: int | str = "auto"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.device = device
        self.dtype = dtype
        self.n_threads = n_threads

    # --- fitting -----------------------------------------------------------------------------------------------

    def fit(self, X: Array, y: Array) -> "BaseMLP":
        """Fit from Glorot-uniform initial weights (or, with warm_start, from the last fit's) for up to
        max_iter epochs, as scikit-learn does."""
        return self._fit(X, y, incremental=False)

    def _fit(self, X: Array, y: Array, incremental: bool) -> "BaseMLP":
        hidden = self._check_params()
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        first = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, Y = self._targets(X, y, incremental, reset=first)  # Y (n, n_outputs) float64 on the host
        rs = check_random_state(self.random_state)  # scikit-learn makes it anew on every fit
        backend = self._backend_for(X)
        sizes = (X.shape[1], *hidden, Y.shape[1])
        if first:
            self._start(backend, sizes, rs)
        else:
            self._resume(backend)
        if not incremental or self.__dict__.get("_opt") is None:
            self._opt, self._lr = self._optimizer(backend), float(self.learning_rate_init)
        self._stochastic(X, Y, rs, backend, incremental)
        self._sync_host()
        return self

    def _stochastic(self, X: Array, Y: Array, rs: np.random.RandomState, backend: Backend,
                    incremental: bool) -> None:
        """scikit-learn's `_fit_stochastic`: epochs of shuffled batches, its stopping rules and rate changes."""
        xp, n_all = backend.xp, X.shape[0]
        train, val = np.arange(n_all), None
        if self.early_stopping:
            stratify = self._stratify(Y) if is_classifier(self) and Y.shape[1] == 1 else None
            train, val = train_test_split(train, random_state=rs, test_size=self.validation_fraction,
                                          stratify=stratify)
            if len(val) < 2:
                raise ValueError("The validation set is too small. Increase 'validation_fraction' or the size of "
                                 "your dataset.")
        Xd, Yd = to_device(backend, X), backend.asarray(Y)  # one move to the device
        if val is not None:
            t, v = backend.asarray(train, dtype=np.int64), backend.asarray(val, dtype=np.int64)
            Xd, Yd, val = Xd[t], Yd[t], (Xd[v], self._val_targets(Y, val))
        n = len(train)
        step = TrainStep(self._net, self._opt, Xd, Yd, None, alpha=self.alpha)
        B = self._batch(n)
        blas = blas_threads(self.n_threads, backend, B, self._net.sizes)  # the steps' BLAS threads on the CPU
        self.threads_ = blas.report
        sample_idx = np.arange(n)
        self.n_iter_ = 0
        for _ in range(self.max_iter):
            if self.shuffle:
                sample_idx = shuffle(sample_idx, random_state=rs)
            order = backend.asarray(sample_idx, dtype=np.int64)
            loss_sum, _ = step.zero_sums()
            with blas, np.errstate(over="ignore", invalid="ignore"):  # a diverging fit is reported below instead
                for batch in gen_batches(n, B):
                    with blas.step():
                        step(order[batch], self._lr if self.solver == "sgd" else self.learning_rate_init)
                loss = backend.to_floats([loss_sum])[0] / n  # the epoch's one read of the loss
            self.n_iter_ += 1
            self.loss_ = loss
            self.t_ += n
            self.loss_curve_.append(loss)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {loss:.8f}")
            if not math.isfinite(loss):
                raise ValueError(f"the training loss became {loss} at iteration {self.n_iter_}; lower "
                                 f"learning_rate_init (now {self.learning_rate_init:g}) or scale the features "
                                 "(e.g. StandardScaler)")
            self._update_no_improvement_count(val)
            if self.solver == "sgd" and self.learning_rate == "invscaling":
                self._lr = float(self.learning_rate_init) / (self.t_ + 1) ** self.power_t
            if self._no_improvement_count > self.n_iter_no_change:
                what = "Validation score" if self.early_stopping else "Training loss"
                msg = (f"{what} did not improve more than tol={self.tol:f} for {self.n_iter_no_change} "
                       "consecutive epochs.")
                if self._trigger_stopping(msg):
                    break
                self._no_improvement_count = 0
            if incremental:
                break
            if self.n_iter_ == self.max_iter:
                warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                              "optimization hasn't converged yet.", ConvergenceWarning)
        if self.early_stopping:  # the weights of the best validation score
            for k, P in self._net.params.items():
                xp.copyto(P, self._best[k])
        if not incremental:  # one partial_fit epoch is too early to judge
            self._warn_if_nothing_learned(step)

    def _update_no_improvement_count(self, val: tuple[Array, Any] | None) -> None:
        if val is not None:
            score = self._score_on(val)
            self.validation_scores_.append(score)
            if self.verbose:
                print(f"Validation score: {score:f}")
            self._no_improvement_count = (self._no_improvement_count + 1
                                          if score < self.best_validation_score_ + self.tol else 0)
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                for k, P in self._net.params.items():
                    self._net.backend.xp.copyto(self._best[k], P)
        else:
            loss = self.loss_curve_[-1]
            self._no_improvement_count = self._no_improvement_count + 1 if loss > self.best_loss_ - self.tol else 0
            self.best_loss_ = min(self.best_loss_, loss)

    def _trigger_stopping(self, msg: str) -> bool:
        """scikit-learn's rule: stop, unless the rate is adaptive (SGD) and can still be divided by 5."""
        if self.solver != "sgd" or self.learning_rate != "adaptive":
            if self.verbose:
                print(msg + " Stopping.")
            return True
        if self._lr <= 1e-6:
            if self.verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._lr /= 5.0
        if self.verbose:
            print(msg + f" Setting learning rate to {self._lr:f}")
        return False

    def _warn_if_nothing_learned(self, step: TrainStep) -> None:
        """A RuntimeWarning when every hidden unit of a ReLU layer was off in the last batch, or (classifier) when
        the loss ended no lower than that of predicting the class frequencies (log k for k balanced classes)."""
        net = self._net
        dead = []
        if self.activation == "relu" and step.workspaces:
            ws = next(reversed(step.workspaces.values()))
            alive = net.backend.to_floats([(ws.A[l] > 0).any() for l in range(1, net.L)])  # one device read
            dead = [l for l, a in enumerate(alive, start=1) if not a]
        if dead:
            warnings.warn(f"every unit of hidden layer {dead[0]} is 0 (dead ReLU) on the last batch: the fit learned "
                          "nothing; scale the features (e.g. StandardScaler) or lower learning_rate_init",
                          RuntimeWarning, stacklevel=3)
        elif self._prior_loss and self.loss_ > 0.98 * self._prior_loss:  # None or 0 (one class): nothing to learn
            warnings.warn(f"the training loss {self.loss_:.4g} is not below {self._prior_loss:.4g}, that of "
                          "predicting the class frequencies: the fit learned nothing; scale the features (e.g. "
                          "StandardScaler) or change learning_rate_init", RuntimeWarning, stacklevel=3)

    # --- prediction --------------------------------------------------------------------------------------------

    def _forward(self, X: Array) -> tuple[Array, Backend]:
        """The outputs A_L (n, n_outputs) on the device X runs on, and that backend; nothing is stored."""
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        backend = self._backend_for(X)
        net = self.__dict__.get("_net")
        if net is None or net.backend != backend:
            net = MLP.from_state_dict(backend, self.state_dict(), self.activation, self.out_activation_)
        A = net.predict_proba(to_device(backend, X))  # (n, n_outputs)
        if not backend.to_numpy(backend.xp.isfinite(A).all()):  # finite inputs that overflow inside the net
            raise ValueError(f"the outputs are not finite in {backend.dtype} for this X (its values are too large "
                             "for the net); scale the features, or use dtype='float64'.")
        return A, backend

    # --- weights and export ------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """The fitted weights as gpunet names them, W1, b1, ..., WL, bL (host NumPy)."""
        check_is_fitted(self)
        state = {}
        for l, (W, b) in enumerate(zip(self.coefs_, self.intercepts_), start=1):
            state[f"W{l}"], state[f"b{l}"] = W, b
        return state

    def export_onnx(self, path: str | Path) -> None:
        """Write the fitted network to `path` as ONNX (see gpunet.runs.export): its activation and output, and
        classes_ as the class names (the output indices for the regressor); the graph's output is what
        predict_proba (predict for the regressor) returns."""
        from gpunet.runs.export import save_onnx

        names = list(getattr(self, "classes_", range(self.n_outputs_)))  # binary: the graph gives [1 - p, p]
        save_onnx(Path(path), self.state_dict(), names, {"input_scale": "as given"}, activation=self.activation,
                  output=self.out_activation_)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle host arrays only: the device net and optimizer become coefs_/intercepts_ and _opt_state."""
        state = dict(super().__getstate__())  # a copy: the base class may return __dict__ itself
        state.pop("_net", None)
        state.pop("_best", None)
        opt = state.pop("_opt", None)
        if opt is not None:
            state["_opt_state"] = opt.state_dict()
        return state

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # --- internals ---------------------------------------------------------------------------------------------

    def _check_params(self) -> tuple[int, ...]:
        """Raise ValueError for a bad hyper-parameter; return the hidden widths as a tuple."""
        sizes = self.hidden_layer_sizes
        hidden = (sizes,) if isinstance(sizes, numbers.Integral) else tuple(sizes)
        if not all(whole(h) and h >= 1 for h in hidden):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got {sizes!r}")
        if self.solver == "lbfgs":
            raise ValueError("solver='lbfgs' is not available in gpunet: use 'adam' or 'sgd' (scikit-learn's "
                             "own MLP runs L-BFGS)")
        choices = {"solver": SOLVERS, "activation": tuple(ACTIVATIONS), "learning_rate": RATES, "device": DEVICES,
                   "dtype": (None, *DTYPES)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: use one of {', '.join(map(str, allowed))}")
        b = self.batch_size
        if b != "auto" and not (whole(b) and b >= 1):
            raise ValueError(f"batch_size must be 'auto' or a positive integer, got {b!r}")
        for name, ok in (("alpha", self.alpha >= 0), ("learning_rate_init", self.learning_rate_init > 0),
                         ("power_t", self.power_t >= 0), ("momentum", 0 <= self.momentum <= 1),
                         ("max_iter", whole(self.max_iter) and self.max_iter >= 1), ("tol", self.tol >= 0),
                         ("n_iter_no_change", whole(self.n_iter_no_change) and self.n_iter_no_change >= 1),
                         ("validation_fraction", 0 < self.validation_fraction < 1),
                         ("beta_1", 0 <= self.beta_1 < 1), ("beta_2", 0 <= self.beta_2 < 1),
                         ("epsilon", self.epsilon > 0), ("max_fun", self.max_fun >= 1),
                         ("n_threads", self.n_threads == "auto" or (whole(self.n_threads) and self.n_threads >= 1))):
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r} is out of range")
        return hidden

    def _validate(self, X: Array, y: Any = "no_validation", reset: bool = True, **kw: Any) -> Any:
        """Checked X (and y as a host array). NumPy-like X goes through scikit-learn's validate_data; a CuPy X
        stays on the GPU, checked for shape, feature count and finite values there."""
        if not on_gpu(X):
            checked = validate_data(self, X, y, dtype=(np.float64, np.float32), reset=reset,
                                    accept_sparse=["csr", "csc"], **kw)
            self._check_range(checked if isinstance(y, str) and y == "no_validation" else checked[0])
            return checked
        if X.ndim != 2:
            raise ValueError(f"Expected a 2D array, got an array of shape {X.shape}")
        if reset:
            self.n_features_in_ = X.shape[1]
            self.__dict__.pop("feature_names_in_", None)
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")
        import cupy  # already imported: X is a CuPy array

        if X.dtype.kind == "f" and not bool(cupy.isfinite(X).all()):
            raise ValueError("Input X contains NaN or infinity.")
        if isinstance(y, str) and y == "no_validation":
            return X
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None.")
        y = np.asarray(y.get() if on_gpu(y) else y)
        check_consistent_length(X, y)
        return X, y

    def _check_range(self, X: Array) -> None:
        """ValueError when X holds a value beyond the range of `dtype`, the type the net computes in (it would
        become infinite there, and the outputs NaN)."""
        if self.dtype is None or not X.size or X.dtype.itemsize <= np.dtype(self.dtype).itemsize:
            return
        big = float(np.finfo(self.dtype).max)
        if float(abs(X).max()) > big:
            raise ValueError(f"Input X contains values beyond the range of {self.dtype} (|x| > {big:.4g}); "
                             "scale the features, or use dtype='float64'.")

    def _backend_for(self, X: Array) -> Backend:
        dtype = self.dtype or (X.dtype.name if X.dtype.name in DTYPES else "float64")
        return get_backend("cuda" if on_gpu(X) else self.device, dtype)

    def _batch(self, n: int) -> int:
        if self.batch_size == "auto":
            return min(200, n)
        if self.batch_size > n:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped")
        return int(np.clip(self.batch_size, 1, n))

    def _optimizer(self, backend: Backend) -> Optimizer:
        if self.solver == "sgd":
            return SGD(backend, self._net.params, self.momentum, self.nesterovs_momentum)
        return Adam(backend, self._net.params, self.beta_1, self.beta_2, self.epsilon, correct_eps=False)

    def _start(self, backend: Backend, sizes: tuple[int, ...], rs: np.random.RandomState) -> None:
        """scikit-learn's `_initialize`: Glorot-uniform weights from `rs` and fresh counters (ValueError, before
        any weight is made, over MAX_PARAMETERS)."""
        params = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
        if params > MAX_PARAMETERS:
            raise ValueError(f"hidden_layer_sizes={self.hidden_layer_sizes!r} makes a net of {params:,} parameters "
                             f"for {sizes[0]} features and {sizes[-1]} outputs, over the limit of {MAX_PARAMETERS:,}")
        state = glorot_uniform(sizes, rs, factor=2.0 if self.activation == "logistic" else 6.0)
        self._net = MLP.from_state_dict(backend, state, self.activation, self.out_activation_)
        self._net.floor = float(np.finfo(backend.dtype).eps)  # scikit-learn clips probabilities to [eps, 1 - eps]
        self._opt = None
        self.__dict__.pop("_opt_state", None)
        self.n_iter_, self.t_, self.device_ = 0, 0, backend.name
        self.n_layers_, self.n_outputs_ = len(sizes), sizes[-1]
        self.loss_curve_: list[float] = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_: list[float] | None = []
            self.best_validation_score_, self.best_loss_ = -np.inf, None
        else:
            self.best_loss_, self.validation_scores_, self.best_validation_score_ = np.inf, None, None
        self._best = {k: P.copy() for k, P in self._net.params.items()}

    def _resume(self, backend: Backend) -> None:
        """The device net and optimizer on `backend`, rebuilt from the host state after unpickling or a move."""
        net = self.__dict__.get("_net")
        if net is not None and net.backend == backend:
            return
        opt = self.__dict__.get("_opt")
        opt_state = opt.state_dict() if net is not None and opt is not None else self.__dict__.pop("_opt_state", None)
        self._net = MLP.from_state_dict(backend, self.state_dict(), self.activation, self.out_activation_)
        self._net.floor = float(np.finfo(backend.dtype).eps)
        self._best = {k: P.copy() for k, P in self._net.params.items()}
        self._opt = None
        if opt_state is not None:
            self._opt = self._optimizer(backend)
            self._opt.load_state_dict(opt_state)
        self.device_ = backend.name

    def _sync_host(self) -> None:
        """Host copies of the trained weights: coefs_[l] (n_l, n_{l+1}) and intercepts_[l] (n_{l+1},)."""
        state = self._net.state_dict()
        L = self._net.L
        self.coefs_ = [state[f"W{l}"] for l in range(1, L + 1)]
        self.intercepts_ = [state[f"b{l}"] for l in range(1, L + 1)]


class MLPClassifier(ClassifierMixin, BaseMLP):
    """scikit-learn's MLPClassifier on gpunet: the same parameters, defaults and fit; outputs softmax for several
    classes, one logistic unit for two (coefs_[-1] is (h, 1)) and one per label for multilabel y (an indicator
    matrix), with the log loss.

    gpunet's parameters: device "cpu" (NumPy), "cuda" (CuPy) or "auto" (cuda when usable; CuPy inputs always
    run on the GPU); dtype "float32", "float64" or None (the input's); n_threads, the BLAS threads of the
    training steps on the CPU, "auto" (gpunet.core.threads) or a count. Fitted attributes as scikit-learn's, plus
    device_ and threads_ (the BLAS threads of the last fit: what was asked, the policy, the count used)."""

    def _targets(self, X: Array, y: Array, incremental: bool, reset: bool) -> tuple[Array, np.ndarray]:
        X, y = self._validate(X, y, reset=reset, multi_output=True)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same classes as in the previous "
                                     f"call to fit. Previously got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. "
                                 f"'y' has {classes}.")
        Y = self._label_binarizer.transform(y).astype(bool)
        self.out_activation_ = "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"
        freq = Y.mean(axis=0).clip(1e-12, 1 - 1e-12)  # the loss of predicting the class frequencies
        self._prior_loss = float(-(freq * np.log(freq)).sum() if self.out_activation_ == "softmax" else
                                 -(freq * np.log(freq) + (1 - freq) * np.log(1 - freq)).sum())
        return X, Y.astype(np.float64)

    def _stratify(self, Y: np.ndarray) -> np.ndarray:
        return Y.astype(bool)  # scikit-learn stratifies binary targets on its bool indicator

    def _val_targets(self, Y: np.ndarray, val: np.ndarray) -> np.ndarray:
        return self._label_binarizer.inverse_transform(Y[val].astype(bool))

    def _score_on(self, val: tuple[Array, np.ndarray]) -> float:
        P = self._net.backend.to_numpy(self._net.predict_proba(val[0]))
        if not np.isfinite(P).all():
            return np.nan
        return float(accuracy_score(val[1], self._labels(P)))

    def _labels(self, P: np.ndarray) -> np.ndarray:
        return self._label_binarizer.inverse_transform(P.ravel() if self.n_outputs_ == 1 else P)

    def partial_fit(self, X: Array, y: Array, classes: Array | None = None) -> "MLPClassifier":
        """One epoch over (X, y) from the current weights and optimizer state. The first call needs `classes`
        (all labels that any call will see) unless y is multilabel."""
        if classes is not None and on_gpu(classes):  # labels are kept on the host, CuPy ones too
            classes = classes.get()
        if not hasattr(self, "classes_"):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            if type_of_target(y.get() if on_gpu(y) else y).startswith("multilabel"):
                self._label_binarizer = LabelBinarizer().fit(y.get() if on_gpu(y) else y)
            else:
                self._label_binarizer = LabelBinarizer().fit(classes)
            self.classes_ = self._label_binarizer.classes_
        elif classes is not None and not np.array_equal(unique_labels(classes), self.classes_):
            raise ValueError(f"`classes={unique_labels(classes)!r}` is not the same as on the first call to "
                             f"partial_fit, {self.classes_!r}.")
        return self._fit(X, y, incremental=True)

    def predict_proba(self, X: Array) -> Array:
        """Class probabilities (n_samples, n_classes), columns in the order of classes_; CuPy for CuPy input."""
        A, backend = self._forward(X)
        P = self._columns(A, backend)
        return P if on_gpu(X) else backend.to_numpy(P)

    def _columns(self, A: Array, backend: Backend) -> Array:
        """The outputs as one probability column per class: a binary net's one unit p as [1 - p, p]."""
        return backend.xp.concatenate([1 - A, A], axis=1) if self.n_outputs_ == 1 else A

    def predict_log_proba(self, X: Array) -> Array:
        """log(predict_proba(X)), on the device of X."""
        A, backend = self._forward(X)
        P = backend.xp.log(self._columns(A, backend))
        return P if on_gpu(X) else backend.to_numpy(P)

    def predict(self, X: Array) -> Array:
        """The predicted classes (n_samples,), or the indicator matrix for multilabel y; a CuPy array for CuPy
        input with several numeric classes (softmax), else NumPy."""
        A, backend = self._forward(X)
        if on_gpu(X) and self.out_activation_ == "softmax" and self.classes_.dtype.kind in "biuf":
            return backend.asarray(self.classes_, dtype=self.classes_.dtype)[A.argmax(axis=1)]
        return self._labels(backend.to_numpy(A))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, BaseMLP):
    """scikit-learn's MLPRegressor on gpunet: the same parameters, defaults and fit; identity output with the
    squared loss ("poisson" is refused). gpunet's parameters as for MLPClassifier."""

    def __init__(self, loss: str = "squared_error", hidden_layer_sizes: Any = (100,), activation: str = "relu", *,
                 solver: str = "adam", alpha: float = 0.0001, batch_size: int | str = "auto",
                 learning_rate: str = "constant", learning_rate_init: float = 0.001, power_t: float = 0.5,
                 max_iter: int = 200, shuffle: bool = True, random_state: Any = None, tol: float = 1e-4,
                 verbose: bool = False, warm_start: bool = False, momentum: float = 0.9,
                 nesterovs_momentum: bool = True, early_stopping: bool = False, validation_fraction: float = 0.1,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-8, n_iter_no_change: int = 10,
                 max_fun: int = 15000, device: str = "auto", dtype: str | None = None, n_threads: int | str = "auto"):
        self.loss = loss
        super().__init__(hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
                         learning_rate=learning_rate, learning_rate_init=learning_rate_init, power_t=power_t,
                         max_iter=max_iter, shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
                         warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
                         early_stopping=early_stopping, validation_fraction=validation_fraction, beta_1=beta_1,
                         beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
                         device=device, dtype=dtype, n_threads=n_threads)

    out_activation_ = "identity"
    _prior_loss = None

    def _check_params(self) -> tuple[int, ...]:
        if self.loss != "squared_error":
            raise ValueError(f"loss={self.loss!r}: gpunet's MLPRegressor has the squared error only ('squared_error'); "
                             "scikit-learn's own MLPRegressor has 'poisson'")
        return super()._check_params()

    def _targets(self, X: Array, y: Array, incremental: bool, reset: bool) -> tuple[Array, np.ndarray]:
        X, y = self._validate(X, y, reset=reset, multi_output=True, y_numeric=True)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        y = np.asarray(y, dtype=np.float64)
        return X, y.reshape(len(y), -1)

    def _val_targets(self, Y: np.ndarray, val: np.ndarray) -> np.ndarray:
        return Y[val].ravel() if Y.shape[1] == 1 else Y[val]

    def _score_on(self, val: tuple[Array, np.ndarray]) -> float:
        P = self._net.backend.to_numpy(self._net.predict_proba(val[0]))
        if not np.isfinite(P).all():
            return np.nan
        return float(r2_score(val[1], P.ravel() if P.shape[1] == 1 else P))

    def partial_fit(self, X: Array, y: Array) -> "MLPRegressor":
        """One epoch over (X, y) from the current weights and optimizer state."""
        return self._fit(X, y, incremental=True)

    def predict(self, X: Array) -> Array:
        """Predictions (n_samples,) or (n_samples, n_outputs); CuPy for CuPy input."""
        A, backend = self._forward(X)
        A = A[:, 0] if A.shape[1] == 1 else A
        return A if on_gpu(X) else backend.to_numpy(A)
