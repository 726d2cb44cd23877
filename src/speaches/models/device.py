"""Where models run: the device and numeric precision to use, decided once per load."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Literal, NamedTuple

from speaches.config import Device

logger = logging.getLogger(__name__)

ResolvedDevice = Literal["cpu", "cuda"]

MAX_AUTO_CPU_WORKERS = 4
"""Most CTranslate2 workers the automatic layout gives a model on a CPU: beyond that, more threads per worker."""
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cuda_device_count() -> int:
    """GPUs CTranslate2 can use; 0 when CUDA or its libraries are missing."""
    try:
        import ctranslate2

        return int(ctranslate2.get_cuda_device_count())
    except Exception:  # a broken CUDA install must fall back to the CPU, not crash the server
        logger.debug("CUDA not usable", exc_info=True)
        return 0


def resolve_device(setting: Device | str) -> ResolvedDevice:
    setting = Device(setting)
    if setting is Device.CPU:
        return "cpu"
    if setting is Device.CUDA:
        return "cuda"
    return "cuda" if cuda_device_count() > 0 else "cpu"


def resolve_compute_type(setting: str, device: ResolvedDevice) -> str:
    """`default`/`auto` mean: int8 on CPU (fastest there), float16 on CUDA."""
    if setting in ("default", "auto"):
        return "float16" if device == "cuda" else "int8"
    return setting


def onnx_providers(device: ResolvedDevice) -> list[str]:
    """onnxruntime execution providers for `device`, falling back to the CPU when CUDA's is absent."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def available_cpus(cgroup_cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may use: its affinity, lowered to a container's CPU quota (cgroup v2 `cpu.max`,
    which a Kubernetes CPU limit or `docker run --cpus` sets) rounded up."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = cgroup_cpu_max.read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


class WorkerLayout(NamedTuple):
    workers: int
    """CTranslate2 replicas of the model (sharing its weights): how many calls run on it at once."""
    threads: int
    """Threads each replica computes with on a CPU; 0 leaves the choice to CTranslate2 (GPU)."""


def whisper_worker_layout(num_workers: int, cpu_threads: int, device: ResolvedDevice, cpus: int) -> WorkerLayout:
    """How a whisper model spreads over the machine; 0 in either setting means "fill in automatically".

    On a CPU, several single-threaded replicas beat one replica with every thread: a call's decoding
    (beam search over one window) barely runs in parallel, and threads beyond the CPUs spin and steal
    time from each other. Measured on 2 CPUs with tiny.en (docs/benchmarks.md): 1 replica of
    CTranslate2's default threads answered one client at 0.61 s a request and 8 clients at 1.93
    requests/s; 2 replicas of 1 thread, 0.52 s and 3.43 requests/s, with 37% less CPU per request.
    So the automatic layout is one replica per CPU (up to `MAX_AUTO_CPU_WORKERS`), the CPUs shared out
    as threads. On a GPU one replica keeps the device busy.
    """
    if device != "cpu":
        return WorkerLayout(workers=num_workers or 1, threads=cpu_threads)
    if num_workers == 0:
        num_workers = max(1, min(MAX_AUTO_CPU_WORKERS, cpus // max(1, cpu_threads)))
    return WorkerLayout(workers=num_workers, threads=cpu_threads or max(1, cpus // num_workers))
