"""The configuration: every preset composes with every optimizer, scheduler and trainer,
and the command line prints each (`--cfg job`); the search space follows the optimizer."""

import gc
import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, call
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from minigpt.commands import run_command
from minigpt.commands import train as train_script


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


PRESETS = [None, *options("experiment")]
TARGETS = {
    "optimizer": {
        "adamw": "torch.optim.AdamW",
        "muon": "minigpt.training.optimizers.MuonWithAdamW",
    },
    "scheduler": {
        name: f"minigpt.training.schedules.{function}"
        for name, function in [
            ("constant", "constant"),
            ("warmup_cosine", "warmup_cosine"),
            ("wsd", "warmup_stable_decay"),
        ]
    },
}


def test_the_groups_hold_the_options_this_test_knows():
    assert options("optimizer") == sorted(TARGETS["optimizer"])
    assert options("scheduler") == sorted(TARGETS["scheduler"])
    assert len(PRESETS) >= 8 and len(options("trainer")) == 5


@pytest.fixture
def command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", sys.argv)
    monkeypatch.setenv("HYDRA_MAIN_MODULE", "__main__")
    yield
    GlobalHydra.instance().clear()


def combinations() -> list[tuple]:
    return list(itertools.product(options("optimizer"), options("scheduler"), options("trainer")))


def check_composes(preset, chosen_options, capsys) -> None:
    """`train.py ... --cfg job --resolve` for each (optimizer, scheduler, trainer): status
    0, and the printed config holds the chosen options (a command-line choice wins over a
    preset's)."""
    for optimizer, scheduler, trainer in chosen_options:
        chosen = [f"optimizer={optimizer}", f"scheduler={scheduler}", f"trainer={trainer}"]
        if preset:
            chosen.append(f"experiment={preset}")
        status = call(train_script.cli, ["train.py", *chosen, "--cfg", "job", "--resolve"])
        printed = capsys.readouterr()
        assert status == 0, f"{chosen}: {printed.err[-2000:]}"
        cfg = yaml.safe_load(printed.out)
        assert cfg["optimizer"]["_target_"] == TARGETS["optimizer"][optimizer], chosen
        assert cfg["scheduler"]["_target_"] == TARGETS["scheduler"][scheduler], chosen
        accelerator = {"cpu": "cpu", "gpu": "gpu"}.get(trainer, "auto")
        assert cfg["trainer"]["accelerator"] == accelerator, chosen


def test_every_preset_composes_with_options_of_every_group(command_line, capsys):
    """make test's share of the product below: the 30 (optimizer, scheduler, trainer)
    combinations dealt out to the presets in turn, four to each (all 30 are met)."""
    rotated = itertools.cycle(combinations())
    for preset in PRESETS:
        check_composes(preset, [next(rotated) for _ in range(4)], capsys)


@pytest.mark.slow  # 240 compositions, 45 s
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_with_every_optimizer_scheduler_and_trainer(
    preset, command_line, capsys
):
    check_composes(preset, combinations(), capsys)


@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_the_search_space_holds_only_the_chosen_optimizers_options(optimizer):
    """hparams_search=optuna searches learning rates the chosen optimizer has: Muon's two,
    AdamW's one (a key the optimizer lacks would fail every trial)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hparams_search=optuna", f"optimizer={optimizer}"],
            return_hydra_config=True,
        )
    searched = [k.removeprefix("optimizer.") for k in cfg.hydra.sweeper.params if "optim" in k]
    assert "lr" in searched and all(key in cfg.optimizer for key in searched)
    assert ("adamw_lr" in searched) == (optimizer == "muon")


def test_the_minigpt_command_runs_each_command_and_names_a_wrong_one(tmp_path):
    """The console script pyproject.toml declares (installed with the project): a command's
    Hydra arguments pass through; an unknown command is one line and status 2."""
    minigpt = Path(sys.executable).parent / "minigpt"
    shown = subprocess.run(
        [minigpt, "sample", "--cfg", "job", "top_k=7"], cwd=tmp_path, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert yaml.safe_load(shown.stdout)["top_k"] == 7
    wrong = subprocess.run([minigpt, "trian"], cwd=tmp_path, capture_output=True, text=True)
    assert wrong.returncode == 2 and "unknown command 'trian'" in wrong.stderr
    assert "minigpt {train|prepare|sample|eval|export|explain|sweep-report|isoflop}" in wrong.stderr


def test_a_command_freezes_what_the_collector_tracks_before_the_process_ends():
    """Exiting skips the last garbage collections over torch's and Lightning's objects (more
    than a second of every train.py run on 2 cores); the command's status still counts."""
    gc.unfreeze()
    try:
        with pytest.raises(SystemExit) as stop:
            run_command(lambda: 3)
        assert stop.value.code == 3 and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_a_key_the_command_does_not_know_is_one_line_and_status_2(command_line, capsys):
    """sample, eval, export and explain compose their config themselves: an override that
    names no key, or does not parse, is still Hydra's one line, exit 2."""
    from minigpt.commands import sample as sample_script

    assert call(sample_script.main, ["sample.py", "tempreature=0.5"]) == 2
    assert capsys.readouterr().err == (
        "error: tempreature is not an option of the config: check its spelling "
        "(`--cfg job` prints every option)\n"
    )
    # the form Hydra's own message suggests adds the key: refused all the same
    assert call(sample_script.main, ["sample.py", "+tempreature=0.5"]) == 2
    assert "error: tempreature is not an option" in capsys.readouterr().err
    assert call(sample_script.main, ["sample.py", "prompt=[a"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
