"""The GPU side: default precision, the peak-FLOPs table (both run anywhere), and training
checks that need a CUDA GPU (they skip on machines without one)."""

import pytest
import torch

import train as train_script
from minigpt.callbacks import gpu_model, peak_flops
from minigpt.precision import auto_precision

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cpu_runs_in_fp32():
    assert auto_precision("cpu") == "32-true"
    if not torch.cuda.is_available():
        assert auto_precision("auto") == "32-true"


@pytest.mark.gpu
@needs_gpu
def test_gpu_defaults_to_bf16_and_trains(compose_train, tmp_path):
    if torch.cuda.is_bf16_supported():
        assert auto_precision("auto") == "bf16-mixed"
    cfg = compose_train("experiment=tiny", "trainer=gpu", "sample.num_samples=0")
    assert train_script.train(cfg) < 4.5  # below the uniform-guess loss, ln(84) ≈ 4.43 + noise


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("overrides", [["trainer.precision=16-mixed"], ["compile=true"]])
def test_gpu_trains_in_16_mixed_and_compiled(compose_train, overrides):
    """16-mixed scales the loss (a GradScaler) around our fused AdamW and clipping;
    compile=true runs the model through torch.compile."""
    cfg = compose_train("experiment=tiny", "trainer=gpu", "sample.num_samples=0", *overrides)
    assert train_script.train(cfg) < 4.5


@pytest.mark.parametrize(
    "name, model",
    [
        ("NVIDIA H200", "h200"),
        ("NVIDIA H100 80GB HBM3", "h100 sxm"),
        ("NVIDIA H100 PCIe", "h100 pcie"),
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("NVIDIA H200 NVL", None),  # not in our table: Lightning's
        ("NVIDIA L4", None),
    ],
)
def test_gpu_names_map_to_peak_table_entries(name, model):
    assert gpu_model(name) == model


def test_peak_flops_dense_and_tf32_and_lightnings_table(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert peak_flops(cuda, torch.bfloat16) == 989e12  # dense, not the 2:4-sparse 1979e12
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "high")
    assert peak_flops(cuda, torch.float32) == 494.5e12  # TF32 matmuls
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "highest")
    assert peak_flops(cuda, torch.float32) == 67e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA L4")
    assert peak_flops(cuda, torch.bfloat16) == 121e12  # from Lightning's table
    assert peak_flops(torch.device("cpu"), torch.float32) is None
