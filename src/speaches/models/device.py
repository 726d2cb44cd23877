"""Where models run: the device and numeric precision to use, decided once per load."""

from __future__ import annotations

import logging
from typing import Literal

from speaches.config import Device

logger = logging.getLogger(__name__)

ResolvedDevice = Literal["cpu", "cuda"]


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
