"""The devices gpunet can run on, as this machine has them: finding CuPy and a usable GPU, the GPU's properties
for `gpunet info` and `gpunet check`, and the pip command that installs CuPy for the driver's CUDA version.
`backend.py` holds the device interface itself; this module never imports it."""

from __future__ import annotations

import re
import shutil
import subprocess
from types import ModuleType
from typing import Any

from gpunet.errors import GpunetError


class CupyMissing(GpunetError):
    """CuPy is not installed (as opposed to installed but unusable): `--device auto` then says nothing."""


def import_cupy() -> ModuleType:
    """CuPy with its cuBLAS bindings, once it has imported and found a usable GPU; GpunetError (CupyMissing when
    it is not installed) saying what is missing otherwise."""
    try:
        import cupy
        import cupy.cublas  # noqa: F401  # a submodule `import cupy` leaves out; it loads cuBLAS (the ctk extra)
    except ImportError as e:
        if e.name == "cupy":
            raise CupyMissing(f"CuPy is not installed, so --device cuda cannot run: {install_hint()}") from None
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


def cuda_status() -> str:
    """One line on CuPy and the GPU, for `gpunet info`: versions and memory, or what is missing."""
    try:
        cupy = import_cupy()
        g = gpu_info(cupy)
    except Exception as e:  # GpunetError, or a driver error while reading the device's properties
        return f"cupy/cuda not usable: {e}"
    return (f"cupy {cupy.__version__}\ngpu {g['name']}, {g['memory_gib']} GiB ({g['free_gib']} free), compute "
            f"capability {g['compute_capability']}, CUDA runtime {g['cuda_runtime']}, driver supports CUDA "
            f"{g['cuda_driver']}")


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
    from gpunet.install import pip_extra

    major = driver_cuda_major()
    if major in (12, 13):
        return pip_extra(f"cuda{major}")
    return f"{pip_extra('cuda12')} (CUDA 12 driver) or {pip_extra('cuda13')} (CUDA 13 driver), not both"


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
        "cuda_runtime": cuda_version(cupy.cuda.runtime.runtimeGetVersion()),
        "cuda_driver": cuda_version(cupy.cuda.runtime.driverGetVersion()),
        "compute_capability": compute_capability(dev.compute_capability),
    }


def compute_capability(digits: str) -> str:
    """CuPy's compute capability, the major and minor digits run together ("90", "120"), as "9.0", "12.0"."""
    return f"{digits[:-1]}.{digits[-1]}"


def cuda_version(v: int) -> str:
    """CUDA's version number (12040) as "12.4"."""
    return f"{v // 1000}.{v % 1000 // 10}"
