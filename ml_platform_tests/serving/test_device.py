"""Where the served network runs: ``MLP_SERVING_DEVICE`` (cpu, cuda, cuda:N, auto)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from ml_platform.lib.serving.predictor import DeviceError, resolve_device
from ml_platform.settings import PlatformSettings


def test_cpu_and_auto_resolve_to_what_torch_can_use() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cuda_without_a_usable_gpu_refuses_to_start_with_the_reason() -> None:
    if torch.cuda.is_available():
        assert resolve_device("cuda") == "cuda"
        with pytest.raises(DeviceError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
        return
    # this machine's CPU-only wheel: the service must not silently score on the CPU of a GPU node
    with pytest.raises(DeviceError, match="sees no CUDA device") as raised:
        resolve_device("cuda")
    assert "CPU-only wheel" in str(raised.value) and "GPU overlay" in str(raised.value)
    with pytest.raises(DeviceError):
        resolve_device("cuda:1")


def test_the_setting_accepts_only_device_names(tmp_path) -> None:
    assert PlatformSettings(root_dir=tmp_path).serving_device == "cpu"  # type: ignore[call-arg]
    for name in ("cpu", "cuda", "cuda:1", "auto"):
        assert PlatformSettings(root_dir=tmp_path, serving_device=name).serving_device == name  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        PlatformSettings(root_dir=tmp_path, serving_device="gpu")  # type: ignore[call-arg]
    with pytest.raises(DeviceError, match="must be cpu, cuda"):
        resolve_device("mps")
