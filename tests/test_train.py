"""Training through the composed Hydra config, in-process and as the command line runs it."""

import copy
import csv
import io
import json
import math
import os
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from conftest import ROOT, call, compose_into, compose_sample, run
from hydra.utils import instantiate

from minigpt.commands import prompts
from minigpt.commands import sample as sample_script
from minigpt.commands import train as train_script
from minigpt.commands.console import exit_on_user_error
from minigpt.core.checkpoint import latest_checkpoint, load_checkpoint, open_checkpoint
from minigpt.core.threads import DEFAULT_THREADS, set_cpu_threads
from minigpt.data import StepBatches
from minigpt.tools import sweep_report
from minigpt.training import run as training_run
from minigpt.training.callbacks import throughput

ADAMW = ("optimizer=adamw", "scheduler=warmup_cosine")
# plain SGD at a constant lr: an update is lr x gradient (Adam's first step is ~lr x its sign)
PLAIN_SGD = (
    "optimizer=adamw",
    "scheduler=constant",
    "scheduler.warmup_steps=0",
    "optimizer._target_=torch.optim.SGD",
    "~optimizer.betas",
    "~optimizer.eps",
    "~optimizer.fused",
    "optimizer.weight_decay=0.0",
)


def read_csv_metrics(output_dir):
    with open(output_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def column(rows, name):
    return [(int(r["step"]), float(r[name])) for r in rows if r.get(name)]


@pytest.mark.parametrize("logger", ["tensorboard", "csv", "none"])
def test_fast_dev_run_of_the_default_config(compose_train, tmp_path, logger):
    cfg = compose_train("debug=fast", f"logger={logger}")
    assert cfg.data.corpus == "shakespeare" and cfg.trainer.precision == "32-true"
    train_script.train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 1
    assert metrics["best_checkpoint"] is None  # fast_dev_run writes no checkpoint


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cache_dir):
    """One tiny run with the CSV logger, shared by the tests that inspect its outputs."""
    out = tmp_path_factory.mktemp("tiny_run")
    result = train_script.train(compose_into(out, cache_dir, "experiment=tiny", "logger=csv"))
    return out, result


def test_run_writes_metrics_checkpoints_and_logs(tiny_run):
    out, result = tiny_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 20
    assert metrics["tokens_seen"] == 20 * 8 * 32
    assert [step for step, _ in metrics["val_curve"]] == [10, 20]
    assert result == metrics["best_val_loss"] == min(v for _, v in metrics["val_curve"])
    assert metrics["final_val_loss"] == metrics["val_curve"][-1][1]
    assert metrics["best_checkpoint"].endswith("checkpoints/best.ckpt")
    assert (out / "checkpoints" / "last.ckpt").is_file()
    rows = read_csv_metrics(out)
    assert len(column(rows, "train/loss")) == 20
    lrs = [v for _, v in column(rows, "lr/hidden")]
    assert lrs[0] < lrs[2] and lrs[-1] < lrs[2]  # warm-up, then decay
    for (_, loss), (_, ppl) in zip(column(rows, "val/loss"), column(rows, "val/ppl"), strict=True):
        assert ppl == pytest.approx(math.exp(loss), rel=1e-4)


def test_checkpoint_is_plain_data_and_carries_the_tokenizer(tiny_run):
    out, _ = tiny_run
    checkpoint = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    assert hparams["tokenizer"]["kind"] == "char"
    assert hparams["model"]["vocab_size"] == len(hparams["tokenizer"]["chars"])
    model, tokenizer = load_checkpoint(out / "checkpoints" / "best.ckpt")
    assert tokenizer.decode(tokenizer.encode("Rom.\n")) == "Rom.\n"
    assert latest_checkpoint(out) == out / "checkpoints" / "best.ckpt"


def test_same_seed_same_loss_curve(compose_train, tmp_path):
    def curve(name, seed):
        out = tmp_path / name
        cfg = compose_train("experiment=tiny", "logger=csv", f"seed={seed}", output_dir=out)
        train_script.train(cfg)
        return column(read_csv_metrics(out), "train/loss")

    first, second, other = curve("a", 7), curve("b", 7), curve("c", 8)
    assert first == second
    assert first != other


def test_overfit_one_batch_reaches_near_zero_loss(compose_train, tmp_path, caplog):
    cfg = compose_train("debug=overfit_batch", "model=tiny", "data.batch_size=4")
    with caplog.at_level("INFO"):
        final_train_loss = train_script.train(cfg)
    assert final_train_loss < 0.1
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["val_curve"] == []  # its config disables validation: none runs
    assert f"train/loss  {final_train_loss:.4f}" in caplog.text  # the summary's figure


def test_bad_config_is_a_clear_error(compose_train):
    cfg = compose_train("experiment=tiny", "model.n_head=3")
    with pytest.raises(ValueError, match="n_embd=32 is not divisible by n_head=3"):
        train_script.train(cfg)


def test_a_fraction_of_the_validation_split_is_taken_once(compose_train, caplog):
    """limit_val_batches=0.5 validates on half of the split's windows (rounded up to whole
    batches), not on half of that half; the run header says both."""
    cfg = compose_train(
        "experiment=tiny", "logger=none", "trainer.max_steps=2", "trainer.limit_val_batches=0.5"
    )
    datamodule, module, trainer = train_script.build(cfg)
    windows = len(datamodule.dataset("val"))
    half = math.ceil(windows / 2 / cfg.data.batch_size)
    assert half >= 10  # enough batches that a second cut would show
    with caplog.at_level("INFO"):
        train_script.train(cfg)
    assert f"on 50% of the split ({half} batches)" in caplog.text
    trainer.fit(module, datamodule=datamodule)
    assert trainer.num_val_batches == [half]


def test_an_error_after_training_began_is_a_failure_with_its_traceback(compose_train):
    """A ValueError from the middle of training is not bad input: it is not turned into a
    one-line error and exit status 2, but raised with its cause."""
    cfg = compose_train(
        "experiment=tiny",
        "logger=none",
        "trainer.enable_progress_bar=false",  # a bar cut by the error is drawn at exit
        "+callbacks.fail._target_=probes.RaiseAtStep",
        "+callbacks.fail.step=3",
    )
    with pytest.raises(train_script.TrainingFailed, match="failed at step 3: ValueError") as info:
        exit_on_user_error(train_script.train)(cfg)
    assert isinstance(info.value.__cause__, ValueError)


@pytest.mark.slow  # tests/test_readme.py runs both in process
def test_train_then_sample_from_the_command_line(tmp_path, cache_dir):
    trained = run(
        "train.py",
        "experiment=tiny",
        f"paths.cache_dir={cache_dir}",
        "sample.num_samples=0",
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "run done" in trained.stdout and "20 (5,120 tokens)" in trained.stdout
    metrics_files = list((tmp_path / "outputs").glob("*/*/metrics.json"))
    assert len(metrics_files) == 1  # outputs/<date>/<time>/metrics.json

    greedy = ["prompt=Rom.", "max_new_tokens=40", "greedy=true"]
    first = run("sample.py", *greedy, cwd=tmp_path)  # newest run's best checkpoint
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.startswith("Rom.") and len(first.stdout) >= 44
    again = run("sample.py", *greedy, cwd=tmp_path)
    assert again.stdout == first.stdout

    two = run("sample.py", "num_samples=2", "top_k=5", "top_p=0.9", "seed=3", cwd=tmp_path)
    assert two.returncode == 0 and two.stdout.count("--- sample") == 2

    bad = run("sample.py", "top_p=1.5", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == "error: top_p=1.5 must be in (0, 1] or null"


def test_sample_names_its_checkpoint_and_takes_the_newest_run(tiny_run, tmp_path, capsys):
    """Without ckpt_path: the run that wrote a checkpoint last, its last.ckpt when it has no
    best.ckpt yet (stopped before a first validation); its path, step and val/loss first."""
    out = tiny_run[0]
    older, newer = tmp_path / "outputs" / "a", tmp_path / "outputs" / "b"
    for run_dir in (older, newer):
        (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(out / "checkpoints" / "best.ckpt", older / "checkpoints" / "best.ckpt")
    shutil.copy(out / "checkpoints" / "last.ckpt", newer / "checkpoints" / "last.ckpt")
    os.utime(older / "checkpoints" / "best.ckpt", (1, 1))
    assert latest_checkpoint(tmp_path / "outputs") == newer / "checkpoints" / "last.ckpt"
    shutil.copy(out / "checkpoints" / "best.ckpt", newer / "checkpoints" / "best.ckpt")
    assert latest_checkpoint(tmp_path / "outputs") == newer / "checkpoints" / "best.ckpt"

    sample_script.sample(compose_sample(f"runs_dir={tmp_path / 'outputs'}", "max_new_tokens=5"))
    best = json.loads((out / "metrics.json").read_text())["best_val_loss"]
    first_line = capsys.readouterr().err.splitlines()[0]
    assert first_line == (
        f"checkpoint: {newer / 'checkpoints' / 'best.ckpt'} (step 20, val/loss {best:.4f})"
    )


def test_escapes_in_prompt_and_stop_and_greedy_after_an_empty_prompt(tiny_run, capsys):
    """`stop=["\\n\\n"]` from a command line holds a backslash and an n: it means a blank
    line, as `prompt='A\\nB'` means two lines. Greedy decoding after a prompt of line
    breaks draws its first token, so it writes text, not only line breaks."""
    assert prompts.unescape(r"a\nb\tc\\n\x") == "a\nb\tc\\n\\x"
    checkpoint = f"ckpt_path={tiny_run[0] / 'checkpoints' / 'best.ckpt'}"
    (text,) = sample_script.sample(
        compose_sample(checkpoint, r"prompt='R\nR'", r"stop=['\n']", "max_new_tokens=200")
    )
    assert text.startswith("R\nR") and "\n" not in text[3:]
    (greedy,) = sample_script.sample(compose_sample(checkpoint, "greedy=true", "max_new_tokens=30"))
    assert greedy.strip()
    assert "the first token is drawn" in capsys.readouterr().err


def test_bad_sampling_arguments_are_one_line_errors(tiny_run, tmp_path, capsys, monkeypatch):
    """The same wrapper as sample.py's command line, in this process."""
    monkeypatch.chdir(tmp_path)
    checkpoint = f"ckpt_path={tiny_run[0] / 'checkpoints' / 'best.ckpt'}"
    for args, message in [
        ([checkpoint, "temperature=-1"], "temperature=-1 must be >= 0"),
        ([checkpoint, "max_new_tokens=0"], "max_new_tokens=0 must be a positive integer"),
        ([checkpoint, "prompt='Rom€o'"], "outside the vocabulary: '€'"),
        (["ckpt_path=nowhere.ckpt"], "no checkpoint at nowhere.ckpt"),
        ([f"ckpt_path={tmp_path}"], "is a directory, not a checkpoint file"),
        (["runs_dir=empty"], "no run with a checkpoint under empty/"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            exit_on_user_error(sample_script.sample)(compose_sample(*args))
        assert exit_info.value.code == 2, args
        assert message in capsys.readouterr().err, args


def test_bad_data_path_exits_with_a_clear_error(tmp_path, cache_dir):
    result = run(
        "train.py",
        "experiment=tiny",
        "data=text_files",
        "data.paths=[missing.txt]",
        f"paths.cache_dir={cache_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "error: data file missing.txt does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    # nothing left behind: neither outputs/<date>/<time>-<pid>/ nor outputs/<date>/
    assert not any((tmp_path / "outputs").iterdir())


def test_multirun_jobs_get_their_own_directories(tmp_path, cache_dir):
    """A job that bad input stops fails alone: the others run, its metrics.json says why,
    and the sweep ends with status 1 and one line naming it."""
    result = run(
        "train.py",
        "-m",
        "experiment=tiny",
        "model.n_head=2,3,4",  # 3 does not divide n_embd=32
        "trainer.max_steps=10",
        f"paths.cache_dir={cache_dir}",
        "sample.max_new_tokens=5",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "--- sample" not in result.stdout  # each job's sample: in its samples.txt
    assert "n_embd=32 is not divisible by n_head=3" in result.stderr
    assert "Traceback" not in result.stderr
    (sweep,) = (tmp_path / "outputs").glob("2*/*")  # outputs/<date>/<time>-<pid>/<job>/
    assert [p.name for p in sweep_report.job_dirs(sweep)] == ["0", "1", "2"]
    failed = json.loads((sweep / "1" / "metrics.json").read_text())
    assert failed["status"] == "failed" and "n_head=3" in failed["error"]
    for job in ("0", "2"):
        assert (sweep / job / "checkpoints" / "best.ckpt").is_file()
        assert (sweep / job / "samples.txt").read_text().startswith("--- sample (best")
        assert json.loads((sweep / job / "metrics.json").read_text())["steps"] == 10

    # the sweep report, with a fourth job that has not finished
    (sweep / "3" / ".hydra").mkdir(parents=True)
    overrides = (sweep / "0" / ".hydra" / "overrides.yaml").read_text()
    (sweep / "3" / ".hydra" / "overrides.yaml").write_text(
        overrides.replace("n_head=2", "n_head=8")
    )
    rows = sweep_report.write_report(sweep)
    assert [r["status"] for r in rows] == ["done", "done", "failed", "running or failed"]
    assert rows[0]["best val/loss"] <= rows[1]["best val/loss"]  # best first
    table = (sweep / "report.md").read_text()
    assert table.count("\n| ") == 6 and "running or failed" in table  # header, rule, 4 jobs
    # the table shows what differs between jobs; what they share is listed once
    assert "Every job: `experiment=tiny trainer.max_steps=10" in table
    assert "| 3 | running or failed | model.n_head=8 |" in table
    with open(sweep / "report.csv") as f:
        assert len(list(csv.reader(f))) == 5
    assert (sweep / "val_curves.png").stat().st_size > 1000


@pytest.mark.slow  # ~30 s; the README test runs an Optuna search in make test
def test_an_optuna_search_survives_bad_trials_and_continues_from_its_study(tmp_path, cache_dir):
    """A trial whose loss diverges reports +inf; one that bad input stops (dropout 1.5) is
    recorded as failed; the search goes on (the seeded sampler draws both kinds). The study
    lives in <sweep dir>/optuna.db: the same command with that sweep directory runs only
    the trials still missing, in job directories after the earlier ones."""
    sweep = tmp_path / "sweep"

    def search(n_trials):
        return run(
            "train.py",
            "-m",
            "hparams_search=optuna",
            f"hydra.sweeper.n_trials={n_trials}",
            f"hydra.sweep.dir={sweep}",
            "experiment=tiny",
            "trainer.max_steps=10",
            f"paths.cache_dir={cache_dir}",
            "sample.num_samples=0",
            "scheduler.warmup_steps=choice(0,2)",
            "optimizer.lr=choice(1e-3,1e30)",  # Muon's; at 1e30 the weights overflow
            "model.n_embd=choice(16,32)",
            "model.dropout=choice(0.0,1.5)",
            cwd=tmp_path,
        )

    result = search(5)  # as if stopped after five of six trials
    assert result.returncode == 0, result.stderr[-3000:]
    assert "run diverged" in result.stdout + result.stderr  # a clear line per failed trial
    assert "dropout=1.5 must be in [0, 1)" in result.stderr
    statuses = [r["status"] for r in sweep_report.write_report(sweep)]
    assert "diverged" in statuses and "failed" in statuses and statuses[0] == "done"
    first_job = (sweep / "0" / "metrics.json").read_text()

    result = search(6)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "continuing study 'minigpt': 5 of 6 trials finished" in result.stdout + result.stderr
    assert [p.name for p in sweep_report.job_dirs(sweep)] == ["0", "1", "2", "3", "4", "5"]
    assert (sweep / "0" / "metrics.json").read_text() == first_job  # not run again
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert math.isfinite(best["best_value"]) and best["best_params"]["optimizer.lr"] == 1e-3
    import optuna

    study = optuna.load_study(study_name="minigpt", storage=f"sqlite:///{sweep}/optuna.db")
    assert len(study.trials) == 6


def sample_in_process(checkpoint, *overrides):
    out = io.StringIO()
    cfg = compose_sample(f"ckpt_path={checkpoint}", *overrides)
    return sample_script.sample(cfg, out=out), out.getvalue()


def test_sample_streams_stops_and_matches_without_cache(tiny_run, capsys):
    checkpoint = tiny_run[0] / "checkpoints" / "best.ckpt"
    greedy = ["prompt=Rom.", "greedy=true", "max_new_tokens=60"]
    (text,), streamed = sample_in_process(checkpoint, *greedy)
    assert text.startswith("Rom.") and len(text) == 64
    assert streamed == text + "\n"  # streamed as generated, the same text
    assert "tokens/s (KV cache, cpu)" in capsys.readouterr().err
    (uncached,), _ = sample_in_process(checkpoint, *greedy, "use_kv_cache=false")
    assert uncached == text

    stop = text[10:12]  # a string the continuation contains
    (stopped,), streamed = sample_in_process(checkpoint, *greedy, f"stop=['{stop}']")
    assert stopped == text[: text.index(stop, 4)] and streamed == stopped + "\n"
    (one_string,), _ = sample_in_process(checkpoint, *greedy, f"stop='{stop}'")
    assert one_string == stopped  # a single string is one stop string, not its characters


def test_sample_prompt_sources_and_edge_cases(tiny_run, tmp_path, capsys):
    checkpoint = tiny_run[0] / "checkpoints" / "best.ckpt"
    greedy = ["greedy=true", "max_new_tokens=20"]
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text("Rom.\nWhat, ho!")
    (from_file,), _ = sample_in_process(checkpoint, *greedy, f"prompt_file={prompt_file}")
    assert from_file.startswith("Rom.\nWhat, ho!") and len(from_file) == 14 + 20

    (from_nothing,), _ = sample_in_process(checkpoint, *greedy, "prompt=''")
    assert len(from_nothing) == 20  # starts after an (unprinted) line break

    long_prompt = tmp_path / "long.txt"
    long_prompt.write_text("To be, or not to be, that is the question: " * 3)
    (continued,), _ = sample_in_process(checkpoint, *greedy, f"prompt_file={long_prompt}")
    assert continued.startswith(long_prompt.read_text())
    assert "the prompt has 129 tokens, more than the model's context" in capsys.readouterr().err

    texts, streamed = sample_in_process(checkpoint, "num_samples=3", "max_new_tokens=10")
    assert len(texts) == 3 and streamed == ""  # batches are returned, not streamed

    with pytest.raises(FileNotFoundError, match="prompt_file=nowhere.txt does not exist"):
        sample_in_process(checkpoint, "prompt_file=nowhere.txt")


def test_tensorboard_gets_scalars_and_text_samples(compose_train, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # a CPU has no peak in the tables: give it one, to see MFU computed and logged
    monkeypatch.setattr(throughput, "peak_flops", lambda device, dtype: 1e12)
    cfg = compose_train(
        "experiment=tiny", "logger=tensorboard", "callbacks.throughput.window_size=5"
    )
    train_script.train(cfg)
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 1
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    # what a user asked for, nothing of Lightning's own (its epoch, always 0; its running
    # counts; validation's throughput at validation-batch indices)
    lrs = {"lr/hidden", "lr/embeddings", "lr/no_decay"}
    rates = {f"train/device/{r}" for r in ("batches", "samples", "items", "flops")}
    speed = {f"{r}_per_sec" for r in rates} | {"train/device/mfu"}
    hp = {"hp/best_val_loss", "hp/best_val_bpb", "hp/final_val_loss", "hp/steps", "hp/wall_time_s"}
    train = {"train/loss", "train/grad_norm"}
    assert scalars == train | {"val/loss", "val/ppl", "val/bpb"} | lrs | speed | hp
    # every training scalar at a training step: the logging steps of train/loss
    logged = {e.step for e in events.Scalars("train/loss")}
    for tag in lrs | speed | train:
        assert {e.step for e in events.Scalars(tag)} <= logged, tag
    tokens_per_s = events.Scalars("train/device/items_per_sec")[-1].value  # tokens per second
    flops_per_s = events.Scalars("train/device/flops_per_sec")[-1].value
    assert tokens_per_s > 0
    # FLOPs/s = tokens/s x FLOPs per token of the model (6N + attention), as MFU uses
    model = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")[0]
    assert flops_per_s == pytest.approx(tokens_per_s * model.flops_per_token(), rel=1e-3)
    assert events.Scalars("train/device/mfu")[-1].value == pytest.approx(flops_per_s / 1e12)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    (final,) = events.Scalars("hp/best_val_loss")  # one point, at the end: no NaN at step 0
    assert final.value == pytest.approx(metrics["best_val_loss"]) and final.step == 20
    # validations sit at the step metrics.json gives them (steps done), not one before
    val_points = events.Scalars("val/loss")
    assert [e.step for e in val_points] == [step for step, _ in metrics["val_curve"]]
    assert [e.value for e in val_points] == pytest.approx([v for _, v in metrics["val_curve"]])
    assert "_hparams_/experiment" in events.PluginTagToContent("hparams")  # the HPARAMS tab
    samples = events.Tensors("samples/text_summary")
    assert [s.step for s in samples] == [10, 20]  # one sample per validation
    assert "```" in samples[-1].tensor_proto.string_val[0].decode()


def test_gradient_accumulation_matches_the_larger_batch(compose_train, tmp_path):
    """One optimizer step over 2 accumulated batches of 4 equals one step on those 8
    windows as one batch (computed here by hand), and does change the weights."""

    class Batches(L.Callback):
        def __init__(self):
            self.inputs, self.targets = [], []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.inputs.append(batch[0].clone())
            self.targets.append(batch[1].clone())

    cfg = compose_train(
        "experiment=tiny",
        "callbacks=none",
        "logger=none",
        "trainer.max_steps=1",
        "trainer.limit_val_batches=0",
        "trainer.gradient_clip_val=null",
        "data.batch_size=4",
        "trainer.accumulate_grad_batches=2",
        *PLAIN_SGD,
        "optimizer.lr=0.5",
    )
    L.seed_everything(cfg.seed)
    datamodule, module, trainer = train_script.build(cfg)
    expected = copy.deepcopy(module.model)
    initial = expected.wte.weight.detach().clone()
    batches = Batches()
    trainer.callbacks.append(batches)
    trainer.fit(module, datamodule=datamodule)
    assert len(batches.inputs) == 2  # two micro-batches, one optimizer step
    _, loss = expected(torch.cat(batches.inputs), torch.cat(batches.targets))
    loss.backward()
    with torch.no_grad():
        for p in expected.parameters():
            p -= 0.5 * p.grad
    trained = module.model.state_dict()
    assert not torch.equal(trained["wte.weight"], initial)
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(trained[key], value, rtol=1e-4, atol=1e-6, msg=key)


def test_bf16_mixed_precision_trains_on_cpu(compose_train, tmp_path):
    fp32 = train_script.train(compose_train("experiment=tiny", output_dir=tmp_path / "fp32"))
    bf16 = train_script.train(
        compose_train(
            "experiment=tiny", "trainer.precision=bf16-mixed", output_dir=tmp_path / "bf16"
        )
    )
    # measured: |Δ| 0.0005–0.0035 over three seeds, both ~3.0 after 20 steps (from ln 83 = 4.4)
    assert abs(bf16 - fp32) < 0.02 and fp32 < 3.3


@pytest.mark.parametrize("log_every", [1, 50])
def test_gradient_clipping_bounds_the_update_norm(compose_train, tmp_path, log_every):
    """Plain SGD at lr 1: the first update is minus the clipped gradient, so its norm is the
    clip value (the gradient's own norm is ~2). On logging steps the clipping reuses the
    logged norm; on the others it computes its own."""

    class FirstUpdate(L.Callback):
        def on_train_start(self, trainer, pl_module):
            self.before = [p.detach().clone() for p in pl_module.parameters()]

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 0:
                after = list(pl_module.parameters())
                deltas = [p.detach() - b for p, b in zip(after, self.before, strict=True)]
                self.norm = float(torch.nn.utils.get_total_norm(deltas))

    cfg = compose_train(
        "experiment=tiny",
        "callbacks=none",
        "logger=csv",
        "trainer.max_steps=2",
        "trainer.limit_val_batches=0",
        f"trainer.log_every_n_steps={log_every}",
        "trainer.gradient_clip_val=0.1",
        *PLAIN_SGD,
        "optimizer.lr=1.0",
    )
    L.seed_everything(cfg.seed)
    datamodule, module, trainer = train_script.build(cfg)
    first = FirstUpdate()
    trainer.callbacks.append(first)
    trainer.fit(module, datamodule=datamodule)
    assert first.norm == pytest.approx(0.1, rel=1e-4)
    if log_every == 1:
        logged = column(read_csv_metrics(tmp_path), "train/grad_norm")
        assert [step for step, _ in logged] == [0, 1]
        assert all(norm > 1 for _, norm in logged)  # clipping did bite


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_16_mixed_with_a_grad_scaler_clips_the_true_gradients(compose_train, optimizer):
    """16-mixed on a GPU scales the loss (a GradScaler) and our AdamW is fused, which
    Lightning leaves scaled and refuses to clip; MuonWithAdamW (a fused AdamW inside) is
    unscaled by Lightning before the step. A CPU GradScaler takes the same path here:
    training runs, and the logged (pre-clip) gradient norms are those of a 32-bit run, not
    65536 times larger."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    class GradNorms(L.Callback):
        def __init__(self):
            self.norms = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.norms.append(float(trainer.callback_metrics["train/grad_norm"]))

    def grad_norms(**precision):
        cfg = compose_train(
            "experiment=tiny", f"optimizer={optimizer}", "logger=none", "callbacks=none"
        )
        L.seed_everything(cfg.seed)
        datamodule, module, _ = train_script.build(cfg)
        norms = GradNorms()
        trainer = L.Trainer(
            accelerator="cpu",
            max_steps=5,
            gradient_clip_val=1.0,
            limit_val_batches=0,
            log_every_n_steps=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            callbacks=[norms],
            **precision,
        )
        trainer.fit(module, datamodule=datamodule)
        return trainer, norms.norms

    scaler = torch.amp.GradScaler("cpu")
    trainer, scaled = grad_norms(plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    assert trainer.precision_plugin.scaler is scaler and scaler.get_scale() > 1
    assert trainer.optimizers[0].param_groups[-1]["fused"]
    _, full = grad_norms(precision="32-true")
    assert len(scaled) == 5 and scaled == pytest.approx(full, rel=1e-2)


def test_gpt2_124m_preset_composes_to_gpt2_smalls_shape(compose_train):
    """The preset's model at GPT-2's vocabulary has GPT-2 small's 124,439,808 parameters
    (counted here from the shapes: biases, LayerNorm gains and biases, tied head), and
    36,096 more for the padding rows to 50,304; 2^19 tokens an optimizer step."""
    from minigpt.core.model import GPT, GPTConfig

    cfg = compose_train("experiment=gpt2_124m")
    assert cfg.data.tokenizer.kind == "gpt2" and cfg.data.corpus == "shards"
    V, T, L, C = 50257, 1024, 12, 768
    per_layer = 12 * C * C + 13 * C  # c_attn, c_proj, c_fc, c_proj with biases; 2 LayerNorms
    for multiple, rows in ((1, V), (cfg.model.vocab_multiple, 50304)):
        options = train_script.plain(cfg.model) | {"vocab_size": V, "vocab_multiple": multiple}
        with torch.device("meta"):
            model = GPT(GPTConfig(**options))
        assert model.num_parameters() == rows * C + T * C + L * per_layer + 2 * C
    assert model.num_parameters() - 36_096 == 124_439_808
    assert cfg.optimizer.betas == [0.9, 0.95] and cfg.model.activation == "gelu_tanh"
    assert cfg.global_batch_tokens == 2**19 and train_script.accumulation(cfg) == 8


@pytest.mark.slow  # ~25 s; tests/test_distributed.py trains DDP in make test
def test_ddp_on_cpu_with_two_processes(tmp_path, cache_dir, compose_train):
    """2 gloo processes x batch 4: each rank trains on batches of its own (StepBatches with its
    rank), rank 0 alone writes logs, metrics and checkpoints, and the run trains like 1
    process x batch 8. Same seed, so the same initial weights and the same effective batch;
    only which windows are drawn differs. Measured here with AdamW: the val curves agree to
    ~1e-3, while another seed moves them by ~2e-2; the bound 5e-3 sits between (Muon's
    larger steps make 20 steps of a tiny model too sensitive to the windows for it)."""
    result = run(
        "train.py",
        "experiment=tiny",
        *ADAMW,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "data.batch_size=4",
        f"paths.cache_dir={cache_dir}",
        "sample.num_samples=0",
        f"hydra.run.dir={tmp_path / 'ddp'}",
        "+callbacks.batches._target_=probes.RecordBatches",
        f"+callbacks.batches.out_dir={tmp_path / 'batches'}",
        cwd=tmp_path,
        pythonpath=ROOT / "tests",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cpu × 2" in result.stdout  # the run header: two processes
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp["tokens_seen"] == 20 * 2 * 4 * 32  # two ranks of 4 x 32 tokens per step
    assert (tmp_path / "ddp" / "checkpoints" / "best.ckpt").is_file()
    assert (result.stdout + result.stderr).count("run done") == 1  # written once

    # rank r's batch i is StepBatches(seed, rank r).batch(i), and the ranks' batches differ
    cfg = compose_train("experiment=tiny", "data.batch_size=4")
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    examples = datamodule.dataset("train", train=True)
    seen = []
    for rank in (0, 1):
        inputs = json.loads((tmp_path / "batches" / f"batches-rank{rank}.json").read_text())
        assert len(inputs) == 20
        batches = StepBatches(examples, 4, cfg.seed, rank)
        for i, batch in enumerate(inputs):
            assert batch == batches.batch(i)[0].tolist(), (rank, i)
        seen.append({tuple(row) for batch in inputs for row in batch})
    assert not seen[0] & seen[1]

    # one TensorBoard event file, one train/loss value per step
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_files = list((tmp_path / "ddp" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(event_files) == 1
    events = EventAccumulator(str(event_files[0]))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert len(steps) == len(set(steps)) == 20

    single_dir = tmp_path / "single"
    # one process, batch 8: the same training batch size; its 1 validation batch of 8 is
    # the 8 windows the two ranks share out (2 batches of 4, counted for the whole run)
    train_script.train(
        compose_train(
            "experiment=tiny",
            *ADAMW,
            "data.batch_size=8",
            "trainer.limit_val_batches=1",
            output_dir=single_dir,
        )
    )
    single = json.loads((single_dir / "metrics.json").read_text())
    for (step_a, loss_a), (step_b, loss_b) in zip(
        ddp["val_curve"], single["val_curve"], strict=True
    ):
        assert step_a == step_b and abs(loss_a - loss_b) < 5e-3


def test_ddp_config_composes_for_many_nodes(compose_train):
    """2 nodes x 8 processes: a trainer of 16 ranks (built, not launched), whose tokens per
    optimizer step count every rank's batch, and CPU threads shared by a node's 8."""
    cfg = compose_train(
        "experiment=tiny",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.num_nodes=2",
        "trainer.devices=8",
        "logger=none",
    )
    _, _, trainer = train_script.build(cfg)
    assert trainer.world_size == 16 and trainer.num_devices == 8
    report = next(c for c in trainer.callbacks if type(c).__name__ == "RunReport")
    assert report.tokens_per_step == 16 * cfg.data.batch_size * cfg.model.block_size
    try:
        assert set_cpu_threads("auto", processes=trainer.num_devices) == max(
            1, DEFAULT_THREADS // 8
        )
    finally:
        torch.set_num_threads(DEFAULT_THREADS)


def test_speedrun_preset_trains_with_muon_and_its_architecture(compose_train, tmp_path):
    from minigpt.training.optimizers import MuonWithAdamW

    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 200)
    cfg = compose_train(
        "experiment=speedrun_cpu",
        f"data.paths=[{text}]",
        "trainer.max_steps=30",
        "trainer.limit_val_batches=2",
        "logger=none",
    )
    from minigpt.training.precision import cpu_precision

    assert cfg.model.pos_encoding == "rope" and cfg.model.qk_norm
    assert cfg.trainer.precision == cpu_precision() and cfg.optimizer.ns_dtype == "auto"
    # the Gram-space iteration; one validation, at the end, however long the run
    assert cfg.optimizer.ns_gram and cfg.trainer.val_check_interval == 30
    loss = train_script.train(cfg)
    assert loss < 0.1  # a repeated line, learnt in 30 steps (measured: 0.020–0.024, 3 seeds)
    checkpoint = torch.load(
        tmp_path / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu"
    )
    groups = checkpoint["optimizer_states"][0]["param_groups"]
    assert [g["name"] for g in groups] == ["hidden", "embeddings", "no_decay"]
    assert groups[0]["lr"] == 0.0 and "ns_steps" in groups[0]  # Muon's, decayed to 0
    assert MuonWithAdamW.__name__ in str(checkpoint["hyper_parameters"]["optimizer"])


def test_outputs_latest_names_the_newest_run_that_keeps_checkpoints(
    tmp_path, cache_dir, monkeypatch
):
    """`outputs/latest` follows single runs that keep checkpoints (not debug=fast, not a
    sweep's jobs: those move `outputs/latest_sweep`); `ckpt_path=latest` resumes it in
    train.py and reads its best checkpoint in sample.py and the others."""
    monkeypatch.chdir(tmp_path)
    outputs = tmp_path / "outputs"
    tiny = [
        "experiment=tiny",
        "logger=none",
        "sample.num_samples=0",
        f"paths.cache_dir={cache_dir}",
    ]
    with pytest.raises(FileNotFoundError, match="there is no outputs/latest"):
        training_run.expand_latest(["ckpt_path=latest"])
    # directories named here: runs of one process within one second would share a name
    first = outputs / "day" / "first"
    argv = ["train.py", *tiny, "trainer.max_steps=2", f"hydra.run.dir={first}"]
    assert call(train_script.cli, argv) == 0
    link = outputs / "latest"
    assert link.is_symlink() and not Path(os.readlink(link)).is_absolute()
    assert link.resolve() == first.resolve()
    argv = ["train.py", *tiny, "debug=fast", f"hydra.run.dir={outputs / 'day' / 'fast'}"]
    assert call(train_script.cli, argv) == 0
    sweep_dir = f"hydra.sweep.dir={outputs / 'day' / 'sweep'}"
    argv = ["train.py", "-m", *tiny, "trainer.max_steps=1", "seed=1,2", sweep_dir]
    assert call(train_script.cli, argv) == 0
    assert link.resolve() == first.resolve()
    sweep = (outputs / "latest_sweep").resolve()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]

    assert training_run.expand_latest([*tiny, "ckpt_path=latest"]) == [
        *tiny,
        "ckpt_path=last",
        f"hydra.run.dir={first.resolve()}",
    ]
    with pytest.raises(ValueError, match="drop hydra.run.dir=x"):
        training_run.expand_latest(["ckpt_path=latest", "hydra.run.dir=x"])
    assert (
        call(train_script.cli, ["train.py", *tiny, "trainer.max_steps=2", "ckpt_path=latest"]) == 0
    )
    assert len((first / "starts.jsonl").read_text().splitlines()) == 2
    path, _ = open_checkpoint("latest", outputs)
    assert path == first.resolve() / "checkpoints" / "best.ckpt"

    # a run that bad input stopped once its link was set leaves no dangling link
    run_dir = outputs / "2000-01-01" / "00-00-00-1"
    (run_dir / ".hydra").mkdir(parents=True)
    training_run.point_latest(run_dir, outputs)
    training_run.remove_if_unused(run_dir, outputs)
    assert not link.is_symlink()
