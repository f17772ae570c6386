"""The compute backend: NumPy on the CPU or CuPy on a CUDA GPU, chosen once and passed explicitly.

Everything device-specific lives here. The equations in `model.py` and `optim.py` only use
`backend.xp`, so one copy of the math runs on both. Host <-> device moves happen only through
`asarray` and `to_numpy`. CuPy is imported lazily, and only when the cuda device is asked for.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable

import numpy as np

from gpunet.errors import GpunetError

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Backend:
    name: str  # "cpu" or "cuda"
    xp: ModuleType  # numpy or cupy
    dtype: np.dtype = field(default=np.dtype(np.float32))

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Host array -> device array (of the backend's float dtype unless `dtype` says otherwise)."""
        return self.xp.asarray(a, dtype=self.dtype if dtype is None else dtype)

    def to_numpy(self, a: Any) -> np.ndarray:
        """Device array -> host numpy array (a sync point on the GPU)."""
        return a.get() if self.name == "cuda" else np.asarray(a)

    def synchronize(self) -> None:
        """Wait for queued device work; call before reading a clock."""
        if self.name == "cuda":
            self.xp.cuda.get_current_stream().synchronize()

    def rng(self, seed: int | tuple[int, ...]) -> Any:
        """A seeded random generator that draws on the device (used for shuffling)."""
        return self.xp.random.default_rng(list(seed) if isinstance(seed, tuple) else seed)

    def permutation(self, n: int, seed: int | tuple[int, ...]) -> Any:
        """A random permutation of range(n), drawn and kept on the device."""
        return self.xp.argsort(self.rng(seed).random(n))

    def take_rows(self, a: Any, idx: Any, out: Any) -> Any:
        """out[i] = a[idx[i]]: gather a batch into a preallocated array (idx must be in range)."""
        if self.name == "cuda":
            return self.xp.take(a, idx, axis=0, out=out)
        # NumPy buffers `out` in its default mode="raise"; with in-range indices "wrap" is the same, unbuffered.
        return np.take(a, idx, axis=0, out=out, mode="wrap")

    def capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Record the device work of `fn()` as a CUDA graph; return a function that replays it (cuda only).

        A replay relaunches the recorded kernels on the same memory with the same scalar arguments, so `fn` must
        only touch arrays that stay alive at fixed addresses (read new inputs from them) and read nothing back to
        the host. Memory that CuPy allocates during the capture (scratch space of a reduction, say) is kept for
        the graph's lifetime, so the pool never hands it to another array that a replay would then overwrite.
        Capture happens on a side stream; replays run on the current stream."""
        if self.name != "cuda":
            raise ValueError("CUDA graphs need the cuda backend")
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

    def describe(self) -> str:
        """One line naming the device, e.g. for the start of a run."""
        if self.name == "cpu":
            return f"cpu (NumPy {np.__version__}, {self.dtype})"
        info = gpu_info(self.xp)
        return f"cuda ({info['name']}, CuPy {self.xp.__version__}, {self.dtype})"


def get_backend(device: str = "auto", dtype: str = "float32") -> Backend:
    """Make the backend for `device` in cpu | cuda | auto. Raises GpunetError with a fix on failure."""
    if device not in DEVICES:
        raise GpunetError(f"unknown device {device!r}: use one of {', '.join(DEVICES)}")
    if dtype not in DTYPES:
        raise GpunetError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    dt = np.dtype(dtype)
    if device == "cpu":
        return Backend("cpu", np, dt)
    if device == "auto":
        try:
            return Backend("cuda", _import_cupy(), dt)
        except GpunetError:
            return Backend("cpu", np, dt)
    return Backend("cuda", _import_cupy(), dt)


def _import_cupy() -> ModuleType:
    try:
        import cupy
    except ImportError as e:
        if e.name == "cupy":
            raise GpunetError(f"CuPy is not installed, so --device cuda cannot run: {install_hint()}") from None
        raise GpunetError(f"CuPy is installed but failed to import ({e}); reinstall it: {install_hint()}") from None
    except Exception as e:  # CuPy raises assorted errors when its CUDA libraries are broken
        raise GpunetError(f"CuPy failed to import ({e}); reinstall it: {install_hint()}") from None
    try:
        available = cupy.is_available()
    except Exception:
        available = False
    if not available:
        raise GpunetError(
            "CuPy is installed but found no usable CUDA GPU or driver; "
            "check `nvidia-smi`, or run with --device cpu"
        )
    return cupy


def driver_cuda_major() -> int | None:
    """The CUDA major version the NVIDIA driver supports, from `nvidia-smi`, or None."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"CUDA Version:\s*(\d+)", out)
    return int(m.group(1)) if m else None


def install_hint() -> str:
    """The pip command that installs CuPy for this machine's CUDA major version."""
    major = driver_cuda_major()
    if major in (12, 13):
        return f"pip install -e '.[cuda{major}]'"
    return "pip install -e '.[cuda12]' (CUDA 12 driver) or pip install -e '.[cuda13]' (CUDA 13 driver)"


def gpu_info(cupy: ModuleType) -> dict[str, Any]:
    """Name, memory and CUDA versions of the current GPU."""
    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"]
    free, total = dev.mem_info
    return {
        "name": name.decode() if isinstance(name, bytes) else str(name),
        "memory_gib": round(total / 2**30, 1),
        "free_gib": round(free / 2**30, 1),
        "cuda_runtime": _cuda_version(cupy.cuda.runtime.runtimeGetVersion()),
        "cuda_driver": _cuda_version(cupy.cuda.runtime.driverGetVersion()),
        "compute_capability": dev.compute_capability,
    }


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"
