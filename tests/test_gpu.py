"""The GPU side: default precision, the peak-FLOPs table (both run anywhere), and training
checks that need a CUDA GPU (they skip on machines without one)."""

import argparse
import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

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


def test_gpu_benchmark_script_runs_its_smoke_check(tmp_path):
    """benchmarks/gpu.py is run on lent GPU machines only; its --smoke mode takes the same
    code path on the CPU (tiny model, three precisions), so it is not first tried there."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["run"] for r in rows] == ["32-true", "bf16-mixed", "16-mixed"]
    for row in rows:
        assert row["steps"] == 30 and row["final_val_loss"] < 4.2 and row["tokens_per_s"] > 0
        assert row["mfu"] is None  # no peak for a CPU


@pytest.mark.parametrize("data", [None, "tinyshakespeare.txt"])
def test_gpu_benchmark_runs_compose_to_the_shakespeare_char_config(compose_train, data):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu

    args = argparse.Namespace(smoke=False, data=data, steps=1000)
    configs = {name: compose_train(*overrides) for name, overrides in gpu.runs(args)}
    assert list(configs) == ["bf16-mixed", "bf16-mixed, compiled", "16-mixed"]
    for name, cfg in configs.items():
        assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.block_size) == (6, 384, 256)
        assert cfg.trainer.accelerator == "gpu" and cfg.data.batch_size == 64
        assert cfg.trainer.precision == name.split(",")[0]
        assert cfg.compile == name.endswith("compiled")
        steps = 500 if name == "16-mixed" else 1000
        assert cfg.scheduler.decay_steps == cfg.trainer.max_steps == steps
        if data:
            assert cfg.data.paths[0].endswith("tinyshakespeare.txt")
        else:
            assert cfg.data.corpus == "shakespeare"
