"""A CuPy stand-in, for the tests only (never shipped): what `CudaBackend` and the rest of gpunet call of CuPy,
with CuPy 14's signatures and behaviour, on the strict device's arrays (devices/strict.py).

The `standin` fixture (conftest.py) installs a fresh `Cupy()` as the modules `cupy`, `cupy.cublas` and
`cupy.cuda`, so `get_backend("cuda")` returns the real, unchanged `CudaBackend` running on it. It keeps CuPy's
rules where gpunet could break them and NumPy would not notice:
- `cublas.gemm(transa, transb, a, b, out=None, alpha=1.0, beta=0.0)` wants a and b of one dtype and an `out`
  of the product's shape and dtype, accumulated in place (`beta`); `cublas.gemv(transa, alpha, a, x, beta, y)`
  updates y and returns None; with beta = 0 neither reads its output (cuBLAS leaves NaN there unread);
- `cuda.Stream.begin_capture`/`end_capture` record a graph (the strict device's tape: nothing runs until
  `Graph.launch`), and allocations during a capture go through the allocator of `cuda.using_allocator`;
- `random.default_rng` draws from another generator than NumPy's (CuPy's is cuRAND's XORWOW), so a shuffle
  drawn on the device differs from the host's, as it would on a GPU;
- `bincount` reads the device twice, as CuPy's does (`(x < 0).any()` and `x.max()`);
- arrays are `cupy.ndarray` by their module's name, as gpunet's estimator tells CuPy input apart.
tests/devices/test_cupy_contract.py checks every signature here against the real CuPy where it imports.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

import numpy as np

from devices.strict import Generator, Ledger, StrictArray, StrictNumpy, op, replay

VERSION = "14.2.0"  # the CuPy whose signatures these are
NAME = b"CuPy stand-in (NumPy)"
MEMORY = 16 * 2**30


class ndarray(StrictArray):
    """`cupy.ndarray`: a strict device array that also tells its memory layout, as CuPy's does."""

    flags = property(lambda self: self._a.flags)

    def get(self, stream: Any = None) -> np.ndarray:
        return super().get()


ndarray.__module__ = "cupy"  # as type(cupy_array).__module__ reads on CuPy


def _op(transa: str) -> Callable[[np.ndarray], np.ndarray]:
    return {"N": lambda a: a, "n": lambda a: a, "T": lambda a: a.T, "t": lambda a: a.T,
            "H": lambda a: a.T.conj(), "h": lambda a: a.T.conj()}[transa]


def _blas_dtype(a: Any) -> None:
    if a.dtype.char not in "fdFD":
        raise TypeError("invalid dtype")


def _accumulate(out: np.ndarray, product: np.ndarray, alpha: Any, beta: Any) -> None:
    """out := alpha product + beta out, not reading out when beta is 0 (BLAS)."""
    beta = np.asarray(beta, out.dtype)
    out[...] = alpha * product if beta == 0 else alpha * product + beta * out


def _gemm_kernel(transa: str, transb: str, a: np.ndarray, b: np.ndarray, out: np.ndarray, alpha: Any,
                 beta: Any) -> np.ndarray:
    _accumulate(out, _op(transa)(a) @ _op(transb)(b), alpha, beta)
    return out


def _gemv_kernel(transa: str, alpha: Any, a: np.ndarray, x: np.ndarray, beta: Any, y: np.ndarray) -> None:
    _accumulate(y, _op(transa)(a) @ x, alpha, beta)


class Cublas:
    """`cupy.cublas`: the two level-2/3 products gpunet calls."""

    def __init__(self, cupy: "Cupy"):
        self.cupy = cupy

    def gemm(self, transa: str, transb: str, a: ndarray, b: ndarray, out: ndarray | None = None, alpha: Any = 1.0,
             beta: Any = 0.0) -> ndarray:
        """out := alpha op(a) @ op(b) + beta out (a new F-ordered array when out is None)."""
        assert a.ndim == b.ndim == 2
        assert a.dtype == b.dtype
        _blas_dtype(a)
        m, k = a.shape if transa in "Nn" else a.shape[::-1]
        n = b.shape[1] if transb in "Nn" else b.shape[0]
        assert (b.shape[0] if transb in "Nn" else b.shape[1]) == k
        if out is None:
            out, beta = self.cupy.asarray(np.empty((m, n), a.dtype, order="F")), 0.0
        else:
            assert out.ndim == 2
            assert out.shape == (m, n)
            assert out.dtype == a.dtype
        return op(self.cupy.ledger, _gemm_kernel, (transa, transb, a, b, out, alpha, beta), {})

    def gemv(self, transa: str, alpha: Any, a: ndarray, x: ndarray, beta: Any, y: ndarray) -> None:
        """y := alpha op(a) @ x + beta y, in place; returns None."""
        _blas_dtype(a)
        assert a.ndim == 2
        assert x.ndim == y.ndim == 1
        assert a.dtype == x.dtype == y.dtype
        m, n = a.shape
        xlen, ylen = (n, m) if transa in "Nn" else (m, n)
        assert x.shape[0] == xlen
        assert y.shape[0] == ylen
        op(self.cupy.ledger, _gemv_kernel, (transa, alpha, a, x, beta, y), {})


class Graph:
    """A captured graph: the strict device's tape of the capture, rerun on the same arrays by `launch`."""

    def __init__(self, ledger: Ledger, tape: list):
        self.ledger, self.tape = ledger, tape

    def launch(self, stream: Any = None) -> None:
        if self.ledger.tape is not None:
            raise RuntimeError("stand-in: a graph launched during a capture")
        replay(self.ledger, self.tape)


class Stream:
    """`cupy.cuda.Stream`: the current stream inside `with`, and graph capture."""

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False, priority: Any = None):
        self.cuda: Cuda | None = None  # set by Cuda.Stream (CuPy's streams find their device themselves)
        self.capturing = False

    def __enter__(self) -> "Stream":
        self.cuda.streams.append(self)
        return self

    def __exit__(self, *args: Any) -> None:
        if self.capturing:
            raise RuntimeError("stand-in: a stream left while capturing (cudaErrorStreamCaptureUnmatched)")
        self.cuda.streams.remove(self)

    def begin_capture(self, mode: Any = None) -> None:
        if self.cuda.streams[-1] is not self:
            raise RuntimeError("stand-in: capture must begin on the current stream, as CuPy's kernels go there")
        self.cuda.cupy.ledger.begin_capture()
        self.capturing = True

    def end_capture(self) -> Graph:
        self.capturing = False
        return Graph(self.cuda.cupy.ledger, self.cuda.cupy.ledger.end_capture())

    def synchronize(self) -> None:
        if self.cuda.cupy.ledger.tape is not None:
            raise RuntimeError("stand-in: stream synchronize during a capture (cudaErrorStreamCaptureUnsupported)")


class Event:
    """`cupy.cuda.Event`, timing on the host's clock."""

    def __init__(self, block: bool = False, disable_timing: bool = False, interprocess: bool = False):
        self.time: float | None = None

    def record(self, stream: Any = None) -> None:
        self.time = time.perf_counter()

    def synchronize(self) -> None:
        """Nothing to wait for: the stand-in runs each operation when it is called."""


class Device:
    """`cupy.cuda.Device`: the current device's id, memory and compute capability."""

    def __init__(self, device: Any = None):
        self.id = 0 if device is None else int(device)

    compute_capability = "90"  # CuPy's digits run together: 9.0
    mem_info = property(lambda self: (MEMORY - 2**30, MEMORY))  # (free, total) bytes

    def synchronize(self) -> None:
        """Nothing queued: the stand-in runs each operation when it is called."""


class Runtime:
    """`cupy.cuda.runtime`: the properties and versions gpunet reports."""

    def getDeviceProperties(self, device: int) -> dict[str, Any]:
        return {"name": NAME, "totalGlobalMem": MEMORY, "major": 9, "minor": 0, "multiProcessorCount": 132}

    def runtimeGetVersion(self) -> int:
        return 12090

    def driverGetVersion(self) -> int:
        return 12080


class Cuda:
    """`cupy.cuda`: streams, events, the device, its runtime, and the allocator."""

    def __init__(self, cupy: "Cupy"):
        self.cupy, self.runtime, self.Device, self.Event = cupy, Runtime(), Device, Event
        self.streams = [self.Stream(null=True)]  # the null stream at the bottom, the current one on top

    def Stream(self, null: bool = False, non_blocking: bool = False, ptds: bool = False,
               priority: Any = None) -> Stream:
        s = Stream(null, non_blocking, ptds, priority)
        s.cuda = self
        return s

    def get_current_stream(self, device_id: int = -1) -> Stream:
        return self.streams[-1]

    def get_elapsed_time(self, start_event: Event, end_event: Event) -> float:
        """Milliseconds between two recorded events."""
        return (end_event.time - start_event.time) * 1e3

    @contextlib.contextmanager
    def using_allocator(self, allocator: Callable[[int], Any] | None = None) -> Iterator[None]:
        before, self.cupy.ledger.allocator = self.cupy.ledger.allocator, allocator
        try:
            yield
        finally:
            self.cupy.ledger.allocator = before


class MemoryPool:
    """`cupy.get_default_memory_pool()`: the bytes of every array the device made (the stand-in frees none)."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def malloc(self, size: int) -> bytearray:
        self.ledger.allocated += size
        return bytearray(0)  # a token: CuPy's MemoryPointer, kept alive by the caller

    def total_bytes(self) -> int:
        return self.ledger.allocated

    def used_bytes(self) -> int:
        return self.ledger.allocated

    def free_all_blocks(self, stream: Any = None) -> None:
        """Nothing to release."""


class Random:
    """`cupy.random`: generators that draw on the device, from another bit generator than NumPy's default."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def default_rng(self, seed: Any = None) -> Generator:
        return Generator(np.random.Generator(np.random.Philox(seed)), self.ledger)


class Cupy(StrictNumpy):
    """The `cupy` module: NumPy's functions on the stand-in's device arrays, and CuPy's own parts above."""

    __name__ = "cupy"
    __version__ = VERSION
    ndarray = ndarray

    def __init__(self) -> None:
        super().__init__(Ledger(ndarray))
        self.random = Random(self.ledger)
        self.cuda, self.cublas = Cuda(self), Cublas(self)
        self.pool = MemoryPool(self.ledger)

    def array(self, obj: Any, dtype: Any = None) -> ndarray:
        return self.asarray(obj, dtype)

    def is_available(self) -> bool:
        return True

    def get_default_memory_pool(self) -> MemoryPool:
        return self.pool

    def bincount(self, x: ndarray, weights: Any = None, minlength: Any = None) -> ndarray:
        """As CuPy's: two reads of the device (a negative label, the largest one) before counting."""
        if bool((x < 0).any()):
            raise ValueError("The first argument of bincount must be non-negative")
        size = max(int(x.max()) + 1, minlength or 0)
        return op(self.ledger, np.bincount, (x,), {"weights": weights, "minlength": size})
