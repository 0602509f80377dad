"""The training step as a GPU runs it, checked on the CPU: no reads of device values between
logging steps, one compiled graph for the whole run, throughput counted across the steps it
does not time, and a run that stops at a target loss."""

import collections
import functools
import json

import lightning as L
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from minigpt.commands import train as train_script
from minigpt.core.checkpoint import load_checkpoint
from minigpt.training import module as lightning_module
from minigpt.training.callbacks import throughput
from minigpt.training.callbacks.step_timer import StepTimer


class ScalarReads(TorchDispatchMode):
    """Counts reads of a tensor's value by the host (`.item()`, `float()`, `bool()`), per
    training step: on a GPU each one waits until the device has finished all queued work."""

    def __init__(self):
        super().__init__()
        self.step = None
        self.per_step = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and self.step is not None:
            self.per_step[self.step] += 1
        return func(*args, **(kwargs or {}))


class MarkSteps(L.Callback):
    """Tells ScalarReads which step runs; runs before every other callback's hooks."""

    def __init__(self, reads: ScalarReads):
        self.reads = reads

    def on_train_batch_start(self, trainer, *args):
        self.reads.step = trainer.global_step + 1  # the step this batch makes

    def on_validation_start(self, trainer, *args):
        self.reads.step = None


@pytest.mark.parametrize(
    "accelerator",
    [
        "cpu",
        pytest.param(
            "gpu",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
            ],
        ),
    ],
)
def test_steps_between_logging_steps_read_no_device_value(compose_train, accelerator):
    """Only logging steps (every log_every_n_steps) may read values: loss and gradient norm
    logging, the progress bar, the throughput monitor's clock. The steps between must let
    the host queue work ahead of the GPU."""
    cfg = compose_train(
        "experiment=tiny",
        f"trainer.accelerator={accelerator}",
        "trainer.max_steps=30",
        "trainer.log_every_n_steps=5",
        "trainer.val_check_interval=15",
        "sample.num_samples=0",
    )
    L.seed_everything(cfg.seed)
    datamodule, module, trainer = train_script.build(cfg)
    reads = ScalarReads()
    trainer.callbacks.insert(0, MarkSteps(reads))
    with reads:
        trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 30
    logging_steps = set(range(5, 31, 5))
    assert {s for s, n in reads.per_step.items() if n} <= logging_steps
    assert all(reads.per_step[s] > 0 for s in logging_steps)  # the probe does see reads


def eager_compile(monkeypatch):
    """torch.compile with the eager backend: Dynamo captures and counts graphs as with
    Inductor, without spending ~40 s generating CPU kernels."""
    compile_eager = functools.partial(torch.compile, backend="eager")
    monkeypatch.setattr(lightning_module.torch, "compile", compile_eager)


def test_compiled_run_compiles_the_training_step_once(compose_train, tmp_path, monkeypatch):
    """Validation (eval mode, a short last batch) and the text samples after it (the KV
    cache's one-token steps) use the plain module: one graph for the whole run."""
    eager_compile(monkeypatch)
    cfg = compose_train(
        "experiment=tiny", "compile=true", "trainer.max_steps=30", "trainer.limit_val_batches=5"
    )
    train_script.train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 30 and len(metrics["val_curve"]) == 3
    assert metrics["compiled_graphs"] == 1
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(key.startswith("model.") for key in checkpoint["state_dict"])
    model, _ = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())


def test_compiled_and_plain_training_steps_agree(compose_train, tmp_path, monkeypatch):
    """The compiled path trains the same parameters as the plain one (same seed, fp32)."""
    eager_compile(monkeypatch)
    curves = {}
    for compiled in (False, True):
        out = tmp_path / str(compiled)
        cfg = compose_train("experiment=tiny", f"compile={compiled}", output_dir=out)
        train_script.train(cfg)
        curves[compiled] = json.loads((out / "metrics.json").read_text())["val_curve"]
    assert [step for step, _ in curves[True]] == [step for step, _ in curves[False]]
    compiled, plain = ([loss for _, loss in curves[c]] for c in (True, False))
    assert compiled == pytest.approx(plain, abs=1e-5)


@pytest.mark.parametrize("log_every", [1, 4])
def test_throughput_counts_the_steps_it_does_not_time(
    compose_train, tmp_path, monkeypatch, log_every
):
    """The monitor reads the clock on logging steps only; FLOPs/s must still be tokens/s x
    FLOPs per token, so the FLOPs of the untimed steps in between are counted."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setattr(throughput, "peak_flops", lambda device, dtype: 1e12)
    cfg = compose_train(
        "experiment=tiny",
        "logger=tensorboard",
        "trainer.max_steps=40",
        "trainer.val_check_interval=20",
        f"trainer.log_every_n_steps={log_every}",
        "callbacks.throughput.window_size=3",
        "sample.num_samples=0",
    )
    train_script.train(cfg)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tokens_per_s = events.Scalars("train/device/items_per_sec")
    flops_per_s = events.Scalars("train/device/flops_per_sec")
    # one figure per logging step once the window of 3 timed logging steps has filled
    assert len(tokens_per_s) == len(flops_per_s) == 40 // log_every - 2
    model = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")[0]
    for tokens, flops in zip(tokens_per_s, flops_per_s, strict=True):
        assert flops.value == pytest.approx(tokens.value * model.flops_per_token(), rel=1e-3)
    assert events.Scalars("train/device/mfu")[-1].value == pytest.approx(
        flops_per_s[-1].value / 1e12
    )


@pytest.mark.parametrize(
    "precision, dtype", [("bf16-mixed", torch.bfloat16), ("32-true", torch.float32)]
)
def test_mfu_is_measured_against_the_peak_of_the_compute_dtype(
    compose_train, monkeypatch, precision, dtype
):
    """A bf16-mixed run's MFU divides by the bf16 peak (on an H200 the float32 one, 67
    TFLOP/s, made MFU read 583%: Fabric's dtype lookup does not know Lightning's plugins)."""
    asked = []
    monkeypatch.setattr(throughput, "peak_flops", lambda device, d: asked.append(d) or 1e12)
    cfg = compose_train("experiment=tiny", f"trainer.precision={precision}", "trainer.max_steps=4")
    L.seed_everything(cfg.seed)
    datamodule, module, trainer = train_script.build(cfg)
    trainer.fit(module, datamodule=datamodule)
    assert asked == [dtype]


def test_step_timer_times_steps_without_validation():
    timer = StepTimer()
    trainer = type("T", (), {})()
    trainer.strategy = type("S", (), {"root_device": torch.device("cpu")})()
    for step in range(1, 6):
        trainer.global_step = step
        timer.on_train_batch_end(trainer, None, None, None, step)
        if step == 3:
            timer.on_validation_start(trainer, None)
    assert len(timer.step_ms) == 2  # steps 2 and 3; step 4's interval holds validation
    timer.on_train_end(trainer, None)
    assert len(timer.step_ms) == 3 and timer.median_ms > 0


def test_stop_at_val_loss_ends_the_run_at_the_first_validation_below(compose_train, tmp_path):
    cfg = compose_train(
        "experiment=tiny",
        "trainer.max_steps=60",
        "stop_at_val_loss=4.2",  # the tiny model passes it within 10 steps
        "sample.num_samples=0",
    )
    train_script.train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["val_curve"][0][1] < 4.2
    assert metrics["steps"] == metrics["target_step"] == 10
    assert metrics["stop_at_val_loss"] == 4.2


def test_stop_at_val_loss_must_be_positive(compose_train, tmp_path):
    with pytest.raises(ValueError, match="stop_at_val_loss=-1 must be a positive number or null"):
        train_script.train(compose_train("experiment=tiny", "stop_at_val_loss=-1"))
    assert not (tmp_path / "checkpoints").exists()
