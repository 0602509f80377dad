"""The GPU side: default precision, the peak-FLOPs table (both run anywhere), and training
checks that need a CUDA GPU (they skip on machines without one)."""

import json
import subprocess
import sys
import tarfile

import pytest
import torch
from conftest import ROOT

from minigpt.commands import train as train_script
from minigpt.training.callbacks.throughput import gpu_model, peak_flops
from minigpt.training.precision import auto_precision

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cpu_runs_in_fp32():
    assert auto_precision("cpu") == "32-true"
    if not torch.cuda.is_available():
        assert auto_precision("auto") == "32-true"


# the tiny model for 300 steps of 64 windows: on the CPU (fp32) its val loss ends at
# 2.32-2.35 over 3 seeds, from 4.43 (a uniform guess over 84 characters); a run that learned
# next to nothing (unigram statistics, ~3.3) fails the bound of 2.5
LEARNING_RUN = (
    "experiment=tiny",
    "optimizer=adamw",  # the fused AdamW path that 16-mixed's GradScaler must unscale
    "scheduler=warmup_cosine",
    "trainer=gpu",
    "trainer.max_steps=300",
    "data.batch_size=64",
    "optimizer.lr=3e-3",
    "scheduler.warmup_steps=20",
    "trainer.val_check_interval=100",
    "trainer.limit_val_batches=20",
    "sample.num_samples=0",
)


def learning_run(compose_train, tmp_path, *overrides, name="run") -> dict:
    cfg = compose_train(*LEARNING_RUN, *overrides, output_dir=tmp_path / name)
    train_script.train(cfg)
    return json.loads((tmp_path / name / "metrics.json").read_text())


@pytest.mark.gpu
@needs_gpu
def test_gpu_defaults_to_bf16_and_learns(compose_train, tmp_path):
    if torch.cuda.is_bf16_supported():
        assert auto_precision("auto") == "bf16-mixed"
    cfg = compose_train(*LEARNING_RUN)
    assert cfg.trainer.precision == auto_precision("gpu")
    metrics = learning_run(compose_train, tmp_path)
    print(f"default ({cfg.trainer.precision}): val curve {metrics['val_curve']}")
    assert metrics["final_val_loss"] < 2.5, metrics["val_curve"]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize(
    "overrides",
    [["trainer.precision=16-mixed"], ["compile=true"]],
    ids=["16-mixed", "compiled"],
)
def test_gpu_learns_in_16_mixed_and_compiled(compose_train, tmp_path, overrides):
    """16-mixed scales the loss (a GradScaler) around our fused AdamW and clipping;
    compile=true runs the training step through torch.compile, compiled once although
    validation and the text samples after it (KV cache) run in between."""
    metrics = learning_run(compose_train, tmp_path, *overrides)
    print(f"{overrides}: val curve {metrics['val_curve']}")
    assert metrics["final_val_loss"] < 2.5, metrics["val_curve"]
    if "compile=true" in overrides:
        assert metrics["compiled_graphs"] == 1


@pytest.mark.gpu
@needs_gpu
def test_bf16_tracks_fp32_on_gpu(compose_train, tmp_path):
    """Same seed, same data: bf16 rounding may move the curve, but by less than a change of
    seed does. On the CPU, bf16-mixed and fp32 end within 8e-4 of each other (3 seeds),
    while the seeds spread over 0.033; 0.015 leaves room for the GPU's other kernels."""
    fp32 = learning_run(compose_train, tmp_path, "trainer.precision=32-true", name="fp32")
    bf16 = learning_run(compose_train, tmp_path, "trainer.precision=bf16-mixed", name="bf16")
    print(f"val curves: fp32 {fp32['val_curve']}, bf16 {bf16['val_curve']}")
    assert abs(bf16["final_val_loss"] - fp32["final_val_loss"]) < 0.015, (fp32, bf16)


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


@pytest.mark.slow  # 45 s
def test_gpu_benchmark_script_runs_its_smoke_check(tmp_path):
    """benchmarks/gpu.py is run on lent GPU machines only; its --smoke mode takes the same
    code path on the CPU (tiny model, no compile, no nanoGPT), so it is not first tried
    there."""
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    figures = json.loads((out / "figures.json").read_text())
    assert figures["machine"]["device"] == "CPU" and (out / "pip-list.txt").exists()
    assert "no --nanogpt" in figures["throughput/nanogpt"]["skipped"]
    throughputs = ("throughput/ours", "throughput/ours-muon", "throughput/ours-b32")
    for name in (*throughputs, "throughput/ours-muon-b32"):
        assert figures[name]["tokens_per_s"] > 0 and figures[name]["mfu"] is None  # no peak
        assert figures[name]["steps_timed"] == 12 - 1 - 5  # intervals after the warm-up
    startup = figures["startup"]
    # one sample each under --smoke: only the order that no hour's noise reverses
    assert 0 < startup["import_torch_s"] < startup["import_lightning_s"]
    assert startup["train_1_step_s"] > startup["import_torch_s"]
    for name in ("quality/speedrun", "quality/ours-compiled", "quality/ours-eager"):
        run = figures[name]
        assert run["target_step"] is not None and run["seconds_to_target"] > 0
        *before, (last_step, last_loss) = run["val_curve"]
        assert last_step == run["target_step"] and last_loss < 4.1  # the smoke target
        assert all(loss >= 4.1 for _, loss in before)  # stopped at the first one below
    with tarfile.open(out / "runs.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.endswith("metrics.json") for n in names)
    assert not any(n.endswith(".ckpt") for n in names)
    assert "| throughput/ours |" in result.stdout


@pytest.mark.parametrize("data", [None, "tinyshakespeare.txt"])
def test_gpu_benchmark_runs_compose_to_nanogpts_configurations(compose_train, data):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu

    for extra in (["compile=true"], ["compile=false"]):
        cfg = compose_train(*gpu.quality_overrides(False, data, 1.48, extra))
        assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.block_size) == (6, 384, 256)
        assert (cfg.model.dropout, cfg.optimizer.lr, cfg.scheduler.decay_steps) == (0.2, 1e-3, 5000)
        assert cfg.trainer.accelerator == "gpu" and cfg.data.batch_size == 64
        assert cfg.stop_at_val_loss == 1.48 and cfg.compile == (extra == ["compile=true"])
        if data:
            assert cfg.data.paths[0].endswith("tinyshakespeare.txt")
        else:
            assert cfg.data.corpus == "shakespeare"
    cfg = compose_train(*gpu.quality_overrides(False, data, 1.48, [], "speedrun_gpu"))
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.block_size) == (6, 384, 256)
    assert cfg.model.value_embeddings and cfg.model.smear and cfg.model.x0_skip
    assert cfg.optimizer._target_.endswith("MuonWithAdamW") and cfg.trainer.accelerator == "gpu"
    assert cfg.stop_at_val_loss == 1.48 and cfg.compile and cfg.data.batch_size == 64
    muon = compose_train(*gpu.throughput_overrides(False, 12, 50, extra=gpu.MUON))
    assert muon.optimizer._target_.endswith("MuonWithAdamW")
    assert muon.model.n_embd == 768 and muon.data.batch_size == 12
    cfg = compose_train(*gpu.throughput_overrides(False, batch=12, steps=50))
    assert cfg.optimizer._target_ == "torch.optim.AdamW"  # experiment=gpt2_124m's
    shape = (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd, cfg.model.block_size)
    assert shape == (12, 12, 768, 1024) and cfg.data.batch_size == 12
    assert (cfg.model.bias, cfg.model.pos_encoding, cfg.model.tie_weights) == (
        False,
        "learned",
        True,
    )
    assert cfg.trainer.precision == "bf16-mixed" and cfg.compile
    assert cfg.trainer.accumulate_grad_batches == 1 and "text_samples" not in cfg.callbacks
