"""A strict stand-in for the CUDA device, for the tests only (not shipped as a device).

`StrictBackend` runs gpunet on NumPy behind an array type, `StrictArray`, that behaves like a CuPy array for
what gpunet uses, with CuPy's rules made loud:
- no implicit conversion to NumPy: `np.asarray(a)`, a NumPy function or ufunc fed a device array, and a host
  array fed to a device function or operator all raise TypeError (CuPy raises on the first and last; on the
  middle ones it dispatches to itself, which hands device arrays to host code expecting NumPy);
- `float()`, `int()`, `bool()`, `operator.index()`, `.item()`, `.tolist()`, `repr()` read a value back:
  they work, and are counted as syncs;
- `.get()` is the sanctioned device -> host copy (`Backend.to_numpy`), counted apart;
- `capture` records a CUDA-graph-like tape: every device operation of `fn()` with its arrays and scalars;
  a replay reruns the tape on the same arrays (not the Python code), so a Python value read during capture
  stays frozen as on a GPU, and a sync or a read-back during capture is an error, as on a GPU.
Every refusal is also logged in `ledger.refused`, so code that swallows a TypeError still fails the test.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import numpy as np

from gpunet.core.backend import Backend


class Ledger:
    """What a strict device saw: syncs (implicit reads), gets (to_numpy), refused conversions."""

    def __init__(self, array: type | None = None):
        self.array = array or StrictArray  # the type of this device's arrays
        self.syncs = 0
        self.allocated = 0  # bytes of the arrays made (none is freed: a CuPy pool's view)
        self.allocator: Callable[[int], Any] | None = None  # where the bytes come from instead, when set
        self.gets = 0
        self.refused: list[str] = []
        self.tape: list[tuple[Callable, tuple, dict, Any]] | None = None  # recording a graph when not None
        self.saved: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # during capture: memory before it, to restore

    def new(self, a: np.ndarray) -> "StrictArray":
        """A device array made from `a`, its memory counted (or asked of `allocator`)."""
        if self.allocator is None:
            self.allocated += a.nbytes
        else:
            self.allocator(a.nbytes)
        return self.array(a, self)

    def begin_capture(self) -> None:
        """Start recording device operations instead of keeping their results (CUDA stream capture)."""
        if self.tape is not None:
            raise RuntimeError("strict device: a capture is already under way")
        self.tape, self.saved = [], {}

    def end_capture(self) -> list[tuple[Callable, tuple, dict, Any]]:
        """Stop recording, put back the memory the recorded operations wrote, and return their tape."""
        tape = self.tape
        for root, before in self.saved.values():
            root[...] = before
        self.tape, self.saved = None, {}
        return tape

    def refuse(self, what: str) -> TypeError:
        self.refused.append(what)
        return TypeError(f"strict device: {what}")

    def sync(self, what: str) -> None:
        if self.tape is not None:
            raise RuntimeError(f"strict device: {what} reads the device during graph capture")
        self.syncs += 1


class StrictArray:
    """A device array: a NumPy array the host may only reach through `get()`."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, a: np.ndarray, ledger: Ledger):
        self._a, self._ledger = a, ledger

    # --- implicit host conversions ---------------------------------------------------------------
    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise self._ledger.refuse("implicit conversion of a device array to NumPy (use backend.to_numpy)")

    def __array_ufunc__(self, ufunc: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        raise self._ledger.refuse(f"NumPy ufunc {ufunc.__name__} called on a device array")

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        raise self._ledger.refuse(f"NumPy function {func.__name__} called on a device array")

    def _read(self, what: str, convert: Callable) -> Any:
        self._ledger.sync(what)
        return convert(self._a)

    def __float__(self) -> float:
        return self._read("float()", float)

    def __int__(self) -> int:
        return self._read("int()", int)

    def __bool__(self) -> bool:
        return self._read("bool()", bool)

    def __index__(self) -> int:
        return self._read("operator.index()", operator.index)

    def __complex__(self) -> complex:
        return self._read("complex()", complex)

    def item(self) -> Any:
        return self._read(".item()", lambda a: a.item())

    def tolist(self) -> Any:
        return self._read(".tolist()", lambda a: a.tolist())

    def __repr__(self) -> str:
        return self._read("repr()", lambda a: f"strict({a!r})")

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return self._read("format()", lambda a: format(a, spec))

    def get(self) -> np.ndarray:
        """The sanctioned copy to the host."""
        if self._ledger.tape is not None:
            raise RuntimeError("strict device: get() during graph capture")
        self._ledger.gets += 1
        return self._a.copy()

    # --- array protocol --------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    T = property(lambda self: self._ledger.array(self._a.T, self._ledger))

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self):
        return (self._ledger.array(np.asarray(r), self._ledger) for r in self._a)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("data", "ctypes", "flat", "tobytes", "tofile", "base"):
            raise AttributeError(name)
        method = getattr(self._a, name)
        if not callable(method):
            raise AttributeError(name)
        return lambda *args, **kwargs: op(self._ledger, getattr(np.ndarray, name), (self, *args), kwargs)

    def __getitem__(self, key: Any) -> Any:
        return op(self._ledger, getitem, (self, key), {}, host_ok=True)

    def __setitem__(self, key: Any, value: Any) -> None:
        op(self._ledger, operator.setitem, (self, key, value), {}, host_ok=True)


def getitem(a: np.ndarray, key: Any) -> np.ndarray:
    """a[key] as CuPy gives it: a 0-d view, not a copied scalar, when `key` picks one element."""
    r = a[key]
    return a[(*key, ...) if isinstance(key, tuple) else (key, ...)] if isinstance(r, np.generic) else r


def _binary(fn: Callable, reflected: bool = False) -> Callable:
    if reflected:
        return lambda self, other: op(self._ledger, fn, (other, self), {})
    return lambda self, other: op(self._ledger, fn, (self, other), {})


def _inplace(fn: Callable) -> Callable:
    def method(self: StrictArray, other: Any) -> StrictArray:
        op(self._ledger, fn, (self, other), {})
        return self
    return method


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
              "lshift", "rshift"):
    _fn = getattr(operator, f"{_name}_" if _name in ("and", "or") else _name)
    setattr(StrictArray, f"__{_name}__", _binary(_fn))
    setattr(StrictArray, f"__r{_name}__", _binary(_fn, reflected=True))
    setattr(StrictArray, f"__i{_name}__", _inplace(getattr(operator, f"i{_name}")))
for _name in ("lt", "le", "eq", "ne", "gt", "ge"):
    setattr(StrictArray, f"__{_name}__", _binary(getattr(operator, _name)))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(StrictArray, f"__{_name}__", (lambda fn: lambda self: op(self._ledger, fn, (self,), {}))(
        getattr(operator, _name)))


def unwrap(x: Any, ledger: Ledger, host_ok: bool) -> Any:
    """Device arrays -> their NumPy arrays, inside lists, tuples and dicts; host arrays refused unless host_ok."""
    if isinstance(x, StrictArray):
        return x._a
    if isinstance(x, np.ndarray) and not host_ok:
        raise ledger.refuse(f"a host NumPy array {x.shape} passed to a device operation (use backend.asarray)")
    if isinstance(x, (list, tuple)):
        return type(x)(unwrap(v, ledger, host_ok) for v in x)
    if isinstance(x, dict):
        return {k: unwrap(v, ledger, host_ok) for k, v in x.items()}
    return x


def wrap(x: Any, ledger: Ledger, given: dict[int, StrictArray]) -> Any:
    """NumPy results -> device arrays (the same StrictArray when NumPy returns an `out=` array); NumPy scalars
    become 0-d device arrays, as CuPy's reductions return."""
    if isinstance(x, np.ndarray):
        same = given.get(id(x))
        return ledger.new(x) if same is None else same
    if isinstance(x, np.generic):
        return ledger.new(np.asarray(x))
    if isinstance(x, (list, tuple)):
        return type(x)(wrap(v, ledger, given) for v in x)
    return x


def op(ledger: Ledger, fn: Callable, args: tuple, kwargs: dict, host_ok: bool = False) -> Any:
    """Run one device operation (and record it when a graph is being captured)."""
    given = {id(a._a): a for a in (*args, *kwargs.values()) if isinstance(a, StrictArray)}
    if ledger.tape is not None:  # a capture records without running: keep what this may overwrite, to restore
        for a in given.values():
            root = a._a if a._a.base is None else a._a.base
            while isinstance(root.base, np.ndarray):
                root = root.base
            ledger.saved.setdefault(id(root), (root, root.copy()))
    result = wrap(fn(*unwrap(args, ledger, host_ok), **unwrap(kwargs, ledger, host_ok)), ledger, given)
    if ledger.tape is not None:
        ledger.tape.append((fn, args, kwargs, result))
    return result


def replay(ledger: Ledger, tape: list[tuple[Callable, tuple, dict, Any]]) -> None:
    """Rerun a recorded tape on the same arrays; results the tape made are refilled in place."""
    for fn, args, kwargs, result in tape:
        out = fn(*unwrap(args, ledger, True), **unwrap(kwargs, ledger, True))
        if isinstance(result, StrictArray) and isinstance(out, (np.ndarray, np.generic)) and out is not result._a:
            result._a[...] = out


class Random:
    """`xp.random`: generators that draw on the device."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def default_rng(self, seed: Any) -> "Generator":
        return Generator(np.random.default_rng(seed), self.ledger)


class Generator:
    def __init__(self, rng: np.random.Generator, ledger: Ledger):
        self.rng, self.ledger = rng, ledger

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.rng, name)
        return lambda *args, **kwargs: op(self.ledger, method, args, kwargs)


class StrictNumpy:
    """The `xp` namespace of the strict device: NumPy's functions on device arrays only."""

    __name__ = "strict"
    __version__ = np.__version__

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.random = Random(ledger)

    def asarray(self, a: Any, dtype: Any = None) -> StrictArray:
        """Host data -> a device array (a copy, as a host -> device transfer is); device arrays pass through."""
        if isinstance(a, StrictArray):
            return a if dtype is None or a.dtype == dtype else a.astype(dtype)
        return self.ledger.new(np.array(a, dtype=dtype))

    array = asarray

    def __getattr__(self, name: str) -> Any:
        obj = getattr(np, name)
        if isinstance(obj, type) or not callable(obj):  # dtypes, constants, np.finfo
            return obj
        return lambda *args, **kwargs: op(self.ledger, obj, args, kwargs)


class StrictBackend(Backend):
    """The strict device: `xp` is `StrictNumpy`, `to_numpy` is `.get()`, and it can record graphs."""

    name = "strict"
    can_capture = True

    def __init__(self, dtype: Any = np.float32):
        self.ledger = Ledger()
        super().__init__(StrictNumpy(self.ledger), dtype)

    def to_numpy(self, a: Any) -> np.ndarray:
        return a.get()

    def capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Record the device operations of `fn()`; as in CUDA stream capture, they do not run now (the arrays
        they wrote are restored afterwards), only on replay."""
        self.ledger.begin_capture()
        try:
            fn()
        finally:
            tape = self.ledger.end_capture()
        return lambda: replay(self.ledger, tape)

    def describe(self) -> str:
        return f"strict (NumPy {np.__version__} behind CuPy's rules, {self.dtype})"
