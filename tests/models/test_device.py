"""How a whisper model is spread over the CPUs: the automatic worker layout and the CPU count it starts from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from speaches.models.device import MAX_AUTO_CPU_WORKERS, WorkerLayout, available_cpus, whisper_worker_layout


@pytest.mark.parametrize(
    ("num_workers", "cpu_threads", "cpus", "expected"),
    [
        (0, 0, 1, WorkerLayout(1, 1)),
        (0, 0, 2, WorkerLayout(2, 1)),  # the benchmark machine: two single-threaded replicas
        (0, 0, 8, WorkerLayout(MAX_AUTO_CPU_WORKERS, 2)),
        (0, 0, 16, WorkerLayout(MAX_AUTO_CPU_WORKERS, 4)),
        (0, 2, 2, WorkerLayout(1, 2)),  # threads set (the Kubernetes manifests): as many replicas as fit
        (0, 2, 8, WorkerLayout(4, 2)),
        (0, 4, 2, WorkerLayout(1, 4)),  # more threads than CPUs: the setting wins, one replica
        (3, 0, 2, WorkerLayout(3, 1)),  # workers set: the CPUs shared among them, at least one thread
        (2, 0, 8, WorkerLayout(2, 4)),
        (2, 3, 8, WorkerLayout(2, 3)),  # both set: taken as they are
    ],
)
def test_the_cpu_layout_fills_in_what_is_left_at_0(
    num_workers: int, cpu_threads: int, cpus: int, expected: WorkerLayout
) -> None:
    layout = whisper_worker_layout(num_workers, cpu_threads, "cpu", cpus)
    assert layout == expected
    if num_workers == 0 and cpu_threads == 0:
        assert layout.workers * layout.threads <= cpus, "the automatic layout never oversubscribes the CPUs"


def test_a_gpu_gets_one_replica_unless_told_otherwise() -> None:
    assert whisper_worker_layout(0, 0, "cuda", 16) == WorkerLayout(1, 0)
    assert whisper_worker_layout(2, 4, "cuda", 16) == WorkerLayout(2, 4)


def test_available_cpus_follows_the_container_quota(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    assert available_cpus(tmp_path / "absent") == affinity
    cpu_max.write_text("max 100000\n")
    assert available_cpus(cpu_max) == affinity
    cpu_max.write_text("50000 100000\n")  # half a CPU (docker run --cpus 0.5) still gets one
    assert available_cpus(cpu_max) == 1
    cpu_max.write_text(f"{150000 * affinity} 100000\n")  # a quota above the affinity: the affinity
    assert available_cpus(cpu_max) == affinity
    cpu_max.write_text("garbage\n")
    assert available_cpus(cpu_max) == affinity
