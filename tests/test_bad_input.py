"""Bad input to train.py and sample.py: one clear line naming the value, exit status 2, no
traceback, nothing written or overwritten."""

import importlib
import re

import pytest
import torch
from conftest import call, compose_into, run

from minigpt.commands import CONFIG_DIR
from minigpt.commands import train as train_script
from minigpt.commands.console import user_error
from minigpt.commands.option_types import compose_checked
from minigpt.core.checkpoint import load_checkpoint
from minigpt.core.threads import DEFAULT_THREADS, set_cpu_threads
from minigpt.training import run as training_run
from minigpt.training.config_checks import check_config


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_steps=abc", "trainer.max_steps='abc' must be an integer >= 1"),
        ("trainer.max_steps=2.5", "trainer.max_steps=2.5 must be an integer >= 1"),
        ("trainer.val_check_interval=0", "trainer.val_check_interval=0 must be an integer"),
        ("data.batch_size=-4", "data.batch_size=-4 must be an integer >= 1"),
        ("trainer.accumulate_grad_batches=two", "accumulate_grad_batches='two' must be"),
        ("optimizer.lr=fast", "optimizer.lr='fast' must be a number >= 0.0"),
        ("trainer.limit_val_batches=-1", "trainer.limit_val_batches=-1 must be a batch count"),
        ("seed=x", "seed='x' must be an integer >= 0"),
    ],
)
def test_bad_numeric_options_are_named(compose_train, tmp_path, override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        train_script.train(compose_train("experiment=tiny", override))
    assert not (tmp_path / "metrics.json").exists()


def test_directories_that_cannot_be_written_are_found_before_training(compose_train, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="cannot write to paths.output_dir="):
        train_script.train(compose_train("experiment=tiny", output_dir=blocker / "run"))
    with pytest.raises(ValueError, match="cannot write to paths.cache_dir="):
        train_script.train(compose_train("experiment=tiny", f"paths.cache_dir={blocker / 'cache'}"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_requested_where_there_is_none(compose_train):
    with pytest.raises(ValueError, match="trainer.accelerator=gpu but this machine has no CUDA"):
        train_script.train(compose_train("experiment=tiny", "trainer=gpu"))


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("good")
    overrides = ("experiment=tiny", "trainer.max_steps=4", "logger=none", "sample.num_samples=0")
    train_script.train(compose_into(out, cache_dir, *overrides))
    return out / "checkpoints" / "last.ckpt"


def bad_checkpoints(good, tmp_path):
    data = good.read_bytes()
    files = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "random bytes": bytes(range(256)) * 64,
    }
    paths = {}
    for name, content in files.items():
        paths[name] = tmp_path / f"{name.replace(' ', '_')}.ckpt"
        paths[name].write_bytes(content)
    checkpoint = torch.load(good, weights_only=True)
    checkpoint["hyper_parameters"]["model"]["n_embd"] *= 2  # weights of another shape
    paths["wrong architecture"] = tmp_path / "wrong.ckpt"
    torch.save(checkpoint, paths["wrong architecture"])
    paths["a directory"] = tmp_path
    return paths


def test_bad_checkpoint_files_are_one_line_errors(good_checkpoint, tmp_path):
    expected = {
        "truncated": "is not a readable checkpoint",
        "empty": "is empty (0 bytes)",
        "random bytes": "is not a readable checkpoint",
        "wrong architecture": "its weights do not fit the model",
        "a directory": "is a directory, not a checkpoint file",
    }
    for name, path in bad_checkpoints(good_checkpoint, tmp_path).items():
        with pytest.raises(ValueError) as error:
            load_checkpoint(path)
        message = str(error.value)
        assert expected[name] in message and "\n" not in message, name
        assert "weights_only" not in message, name


def test_the_command_line_reports_bad_checkpoints_without_a_traceback(
    good_checkpoint, tmp_path, cache_dir
):
    bad = bad_checkpoints(good_checkpoint, tmp_path)["truncated"]
    result = run("sample.py", f"ckpt_path={bad}", cwd=tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"error: {bad} is not a readable checkpoint (truncated or not a checkpoint)"
    )
    result = run(
        "train.py",
        "experiment=tiny",
        f"ckpt_path={tmp_path}",
        f"paths.cache_dir={cache_dir}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: ckpt_path={tmp_path} is a directory" in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_errors_from_configured_constructors_are_one_line(compose_train):
    """Hydra wraps what a constructor raises; Lightning raises its own exception type."""
    from hydra.utils import instantiate

    cfg = compose_train("experiment=tiny", "data.corpus=foo")
    with pytest.raises(Exception) as wrapped:
        instantiate(cfg.data)
    assert user_error(wrapped.value) == (
        "data.corpus='foo' is not one of shakespeare, text_files, hf_dataset, shards"
    )
    cfg = compose_train("experiment=tiny", "trainer.devices=0")
    with pytest.raises(Exception) as wrapped:
        instantiate(cfg.trainer)
    assert "Trainer(devices=0)` value is not a valid input" in user_error(wrapped.value)
    cfg = compose_train("data=text_files")
    with pytest.raises(Exception) as missing:
        cfg.data.paths  # noqa: B018
    assert user_error(missing.value) == (
        "data.paths has no value (???): set it on the command line, data.paths=..."
    )
    for override, message in [
        ("every_n_steps=abc", "every_n_steps='abc' must be a positive integer or null"),
        ("every_n_minutes=0", "every_n_minutes=0 must be a positive number or null"),
    ]:
        cfg = compose_train("experiment=tiny", f"callbacks.last_checkpoint.{override}")
        with pytest.raises(Exception) as wrapped:
            instantiate(cfg.callbacks.last_checkpoint)
        assert user_error(wrapped.value) == f"callbacks.last_checkpoint.{message}"
    assert user_error(RuntimeError("a bug")) is None  # not bad input: the traceback shows
    with pytest.raises(ValueError, match="compile_mode='bogus' is not one of"):
        train_script.train(compose_train("experiment=tiny", "compile=true", "compile_mode=bogus"))


def test_run_directories_are_checked_before_hydra_writes_into_them(
    good_checkpoint, tmp_path, capsys
):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    finished_run = good_checkpoint.parent.parent
    for argv, message in [
        ([f"hydra.run.dir={blocker / 'run'}"], "cannot write to hydra.run.dir="),
        ([f"paths.log_dir={blocker / 'outputs'}"], "cannot write to paths.log_dir="),
        ([f"hydra.run.dir={finished_run}"], "already holds a run"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            training_run.check_run_dir_before_hydra(["experiment=tiny", *argv])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    before = sorted(p.name for p in finished_run.rglob("*"))
    training_run.check_run_dir_before_hydra([f"hydra.run.dir={finished_run}", "ckpt_path=last"])
    assert sorted(p.name for p in finished_run.rglob("*")) == before
    training_run.release_run_dir(finished_run)  # taken for the run that would follow


def test_threads_are_set_deliberately(compose_train):
    """auto: torch's default share (physical cores or $OMP_NUM_THREADS) per process of the
    run on this machine; a number as given; anything else is named."""
    try:
        assert set_cpu_threads("auto", processes=1) == DEFAULT_THREADS
        assert set_cpu_threads("auto", processes=2) == max(1, DEFAULT_THREADS // 2)
        assert torch.get_num_threads() == max(1, DEFAULT_THREADS // 2)
        assert set_cpu_threads("auto", processes=64) == 1
        assert set_cpu_threads(1, processes=1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(DEFAULT_THREADS)
    for bad in ("threads=0", "threads=many"):
        with pytest.raises(ValueError, match="must be auto or an integer >= 1"):
            check_config(compose_train("experiment=tiny", bad))


@pytest.mark.parametrize("command", ["sample", "eval"])  # all four: test_every_option.py
def test_every_command_takes_the_threads_option(good_checkpoint, tmp_path, capsys, command):
    main = importlib.import_module(f"minigpt.commands.{command}").main
    script = f"{command}.py"
    assert call(main, [script, f"ckpt_path={good_checkpoint}", "threads=many"]) == 2
    assert capsys.readouterr().err == "error: threads='many' must be auto or an integer >= 1\n"
    args = {"sample": ["max_new_tokens=2"], "eval": ["split=val", "limit=1"]}.get(command, [])
    args += [f"out_dir={tmp_path / 'out'}"] if command in ("export", "explain") else []
    try:
        assert call(main, [script, f"ckpt_path={good_checkpoint}", "threads=1", *args]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(DEFAULT_THREADS)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.dropout=abc", "model.dropout='abc' must be a finite number (its default is 0.0)"),
        ("sample.temperature=nan", "sample.temperature=nan must be a finite number"),
        ("model.n_layer=2.5", "model.n_layer=2.5 must be an integer (its default is 2)"),
        ("paths.cache_dir=0", "paths.cache_dir=0 is not a path: quote it, paths.cache_dir='0'"),
        ("optimizer.betas=-1", "optimizer.betas=-1 must be a list, optimizer.betas=[...]"),
        ("callbacks.lr_monitor=abc", "callbacks.lr_monitor is a group of options"),
        ("scheduler.warmup_steps=null", "scheduler.warmup_steps needs a value (its default"),
        ("+model.bogus=1", "model.bogus is not an option of model: check its spelling"),
        ("model.bias=1", "model.bias=1 must be true or false"),
    ],
)
def test_every_value_is_checked_against_its_options_default(override, message):
    """The net under the commands' own checks: a value that does not fit its option never
    reaches code that would fail on it with a traceback."""
    with pytest.raises(ValueError, match=re.escape(message)):
        compose_checked(CONFIG_DIR, "train", ["experiment=tiny", override])


@pytest.mark.parametrize(
    "override",
    [
        "+trainer.profiler=simple",  # Lightning's Trainer takes options of its own
        "+callbacks.mine._target_=lightning.pytorch.callbacks.Timer",  # a callback of one's own
        "callbacks.last_checkpoint.every_n_steps=null",  # null: off
        "callbacks.attention_maps=null",
        "sample.top_p=null",
        "trainer.precision=32",  # several types: its reader checks it
        "optimizer.lr=1",  # an integer where a float goes
        "data=text_files",  # its paths have no default (???)
    ],
)
def test_values_that_fit_pass(override):
    compose_checked(CONFIG_DIR, "train", ["experiment=tiny", override])


def test_a_key_train_does_not_know_is_one_line_before_any_directory(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["train.py", "experiment=tiny", "bogus=1", f"hydra.run.dir={run_dir}"]
    assert call(train_script.cli, argv) == 2
    assert capsys.readouterr().err == (
        "error: bogus is not an option of the config: check its spelling "
        "(`--cfg job` prints every option)\n"
    )
    assert not (run_dir / ".hydra").exists()
