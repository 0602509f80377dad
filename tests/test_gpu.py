"""Checks that need a CUDA GPU; they skip on machines without one."""

import pytest
import torch

import train as train_script
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
