"""The compute backend: NumPy on the CPU or CuPy on a CUDA GPU, chosen once (`get_backend`) and passed explicitly.

This is the device interface. The equations in `model.py` and `optim.py` only use `backend.xp` and the
backend's products, so one copy of the math runs on both. Host <-> device moves happen only through `asarray`
and `to_numpy`. CuPy is imported lazily (`devices.import_cupy`), and only when the cuda device is asked for;
finding it and describing the GPU live in `devices.py`.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any, Callable, Sequence

import numpy as np

from gpunet.core.devices import CupyMissing, gpu_info, import_cupy
from gpunet.errors import GpunetError

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")


class Backend:
    """What the equations and commands ask of a device; `CpuBackend` and `CudaBackend` answer it.

    `name` ("cpu" or "cuda"), `xp` (numpy or cupy) and `dtype` (the float type of parameters and data)."""

    name: str
    can_capture = False  # whether `capture` records CUDA graphs
    gemm_accumulates = False  # whether `gemm`'s beta adds into `out` in the product itself (no extra passes)
    chunk_rows: int | None = None  # the training step takes a batch in row chunks of this many (None: whole)

    def __init__(self, xp: ModuleType, dtype: Any = np.float32):
        self.xp, self.dtype = xp, np.dtype(dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.dtype})"

    def __eq__(self, other: object) -> bool:
        """The same kind of device (on CUDA: the current device) and dtype, so arrays made through one serve the
        other; `get_backend` makes a new object on every call."""
        return type(other) is type(self) and other.dtype == self.dtype  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self.dtype))

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Host array -> device array (of the backend's float dtype unless `dtype` says otherwise)."""
        return self.xp.asarray(a, dtype=self.dtype if dtype is None else dtype)

    def to_numpy(self, a: Any) -> np.ndarray:
        """Device array -> host numpy array (a sync point on the GPU)."""
        raise NotImplementedError

    def to_floats(self, scalars: Sequence[Any]) -> list[float]:
        """Device scalars (0-d arrays: an epoch's loss, accuracy...) -> Python floats, in one device read."""
        return self.to_numpy(self.xp.stack(scalars).astype(self.xp.float64)).tolist()

    def synchronize(self) -> None:
        """Wait for queued device work; call before reading a clock."""

    def permutation(self, n: int, seed: int | tuple[int, ...]) -> Any:
        """A random permutation of range(n) (int64, on the device), drawn on the host with NumPy from `seed` (a
        run's seed and epoch, say) and copied over, so every device, and a resume on another one, sees the same."""
        order = np.argsort(np.random.default_rng(list(seed) if isinstance(seed, tuple) else seed).random(n))
        return self.asarray(order, dtype=np.int64)

    def take_rows(self, a: Any, idx: Any, out: Any) -> Any:
        """out[i] = a[idx[i]]: gather a batch into a preallocated array (idx must be in range)."""
        return self.xp.take(a, idx, axis=0, out=out)

    # The equations' products: `beta` adds a product into `out` (momentum's v := mu v + dW), which cuBLAS does
    # inside the GEMM (CudaBackend: no extra pass over memory). These plain `xp` versions are NumPy's on the CPU;
    # calling SciPy's BLAS with beta there measured no faster (README, Speed) and would load a second OpenBLAS
    # with threads of its own.

    def gemm(self, A: Any, B: Any, out: Any, beta: float = 0.0) -> Any:
        """out := A @ B + beta out   # (m, k) @ (k, n) -> (m, n)"""
        if beta:
            if beta != 1:
                out *= beta
            out += self.xp.matmul(A, B)
        else:
            self.xp.matmul(A, B, out=out)
        return out

    def colsum(self, M: Any, ones: Any, out: Any, beta: float = 0.0) -> Any:
        """out := 1^T M + beta out   # (m, n) -> (n,), ones (m,): the sum over the batch"""
        return self.gemm(ones[None, :], M, out[None, :], beta)[0]

    def axpy(self, a: Any, x: Any, y: Any, tmp: Any) -> Any:
        """y += a x, through `tmp` (`a` may be a 0-d device array, as in a CUDA graph)."""
        y += self.xp.multiply(x, a, out=tmp)
        return y

    def capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Record the device work of `fn()` as a replayable graph (only where `can_capture`)."""
        raise NotImplementedError(f"{self.name} cannot record graphs")

    def describe(self) -> str:
        """One line naming the device, e.g. for the start of a run."""
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        """Versions of the array libraries this backend runs on."""
        return {"numpy": np.__version__}

    def hardware(self) -> dict[str, str]:
        """The accelerator this backend runs on, for `gpunet check` (nothing beyond the host's CPU here)."""
        return {}


class CpuBackend(Backend):
    """NumPy on the host."""

    name = "cpu"
    # A batch's arrays then take at most 4096 rows (2 MiB for a 128-wide layer), not the whole batch's (29 MiB
    # each at 60,000 rows), at about the same speed (README, Speed).
    chunk_rows = 4096

    def __init__(self, dtype: Any = np.float32):
        super().__init__(np, dtype)

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.asarray(a)

    def take_rows(self, a: Any, idx: Any, out: Any) -> Any:
        # NumPy buffers `out` in its default mode="raise"; with in-range indices "wrap" is the same, unbuffered.
        return a.take(idx, axis=0, out=out, mode="wrap")

    def describe(self) -> str:
        return f"cpu (NumPy {np.__version__}, {self.dtype})"


class CudaBackend(Backend):
    """CuPy on the current CUDA device."""

    name = "cuda"
    can_capture = True
    gemm_accumulates = True

    def __init__(self, xp: ModuleType, dtype: Any = np.float32):
        super().__init__(xp, dtype)
        import cupy.cublas  # a submodule that `import cupy` leaves out

        self.cublas = cupy.cublas

    def to_numpy(self, a: Any) -> np.ndarray:
        return a.get()

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    def capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Record the device work of `fn()` as a CUDA graph; return a function that replays it.

        A replay relaunches the recorded kernels on the same memory with the same scalar arguments, so `fn` must
        only touch arrays that stay alive at fixed addresses (read new inputs from them) and read nothing back to
        the host. Memory that CuPy allocates during the capture (scratch space of a reduction, say) is kept for
        the graph's lifetime, so the pool never hands it to another array that a replay would then overwrite.
        Capture happens on a side stream; replays run on the current stream."""
        cuda = self.xp.cuda
        pool = self.xp.get_default_memory_pool()
        kept: list[Any] = []

        def allocate(nbytes: int) -> Any:
            kept.append(pool.malloc(nbytes))
            return kept[-1]

        stream = cuda.Stream(non_blocking=True)
        with stream, cuda.using_allocator(allocate):
            stream.begin_capture()
            try:
                fn()
            except BaseException:
                stream.end_capture()
                raise
            graph = stream.end_capture()

        def replay() -> None:
            graph.launch(stream=cuda.get_current_stream())

        replay.kept = kept  # type: ignore[attr-defined]  # owned by the replay function, freed with it
        return replay

    def gemm(self, A: Any, B: Any, out: Any, beta: float = 0.0) -> Any:
        (a, ta), (b, tb) = _rowmajor(A), _rowmajor(B)
        return self.cublas.gemm(ta, tb, a, b, out=out, beta=beta)

    def colsum(self, M: Any, ones: Any, out: Any, beta: float = 0.0) -> Any:
        self.cublas.gemv("T", 1.0, M, ones, beta, out)  # out := 1 M^T ones + beta out, in place
        return out

    def describe(self) -> str:
        info = gpu_info(self.xp)
        return f"cuda ({info['name']}, CuPy {self.xp.__version__}, {self.dtype})"

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "cupy": self.xp.__version__}

    def hardware(self) -> dict[str, str]:
        g = gpu_info(self.xp)
        return {"gpu": f"{g['name']}, {g['memory_gib']} GiB ({g['free_gib']} free), compute capability "
                       f"{g['compute_capability']}",
                "cuda": f"runtime {g['cuda_runtime']}, driver supports {g['cuda_driver']}"}


def _rowmajor(M: Any) -> tuple[Any, str]:
    """(R, trans) with op(R) == M and R row-major, for cupy.cublas."""
    return (M, "N") if M.flags.c_contiguous else (M.T, "T")


def get_backend(device: str = "auto", dtype: str = "float32") -> Backend:
    """Make the backend for `device` in cpu | cuda | auto. Raises GpunetError with a fix on failure."""
    if device not in DEVICES:
        raise GpunetError(f"unknown device {device!r}: use one of {', '.join(DEVICES)}")
    if dtype not in DTYPES:
        raise GpunetError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if device == "cpu":
        return CpuBackend(dtype)
    try:
        return CudaBackend(import_cupy(), dtype)
    except CupyMissing:
        if device == "auto":
            return CpuBackend(dtype)
        raise
    except GpunetError as e:  # CuPy is there but unusable: say why auto runs on the CPU
        if device == "auto":
            print(f"--device auto: using the cpu, as {e}", file=sys.stderr)
            return CpuBackend(dtype)
        raise
