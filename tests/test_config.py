"""The configuration: every preset composes with every optimizer, scheduler and trainer,
and the command line prints each (`--cfg job`); the search space follows the optimizer."""

import itertools
import sys

import pytest
import yaml
from conftest import ROOT, call
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

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
    assert len(PRESETS) >= 8 and len(options("trainer")) == 4


@pytest.fixture
def command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", sys.argv)
    monkeypatch.setenv("HYDRA_MAIN_MODULE", "__main__")
    yield
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_with_every_optimizer_scheduler_and_trainer(
    preset, command_line, capsys
):
    combinations = itertools.product(options("optimizer"), options("scheduler"), options("trainer"))
    for optimizer, scheduler, trainer in combinations:
        chosen = [f"optimizer={optimizer}", f"scheduler={scheduler}", f"trainer={trainer}"]
        if preset:
            chosen.append(f"experiment={preset}")
        status = call(train_script.cli, ["train.py", *chosen, "--cfg", "job", "--resolve"])
        printed = capsys.readouterr()
        assert status == 0, f"{chosen}: {printed.err[-2000:]}"
        cfg = yaml.safe_load(printed.out)
        assert cfg["optimizer"]["_target_"] == TARGETS["optimizer"][optimizer], chosen
        assert cfg["scheduler"]["_target_"] == TARGETS["scheduler"][scheduler], chosen
        accelerator = {"cpu": "cpu", "gpu": "gpu"}.get(trainer, "auto")  # the choice wins
        assert cfg["trainer"]["accelerator"] == accelerator, chosen


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
