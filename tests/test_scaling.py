"""IsoFLOP scaling: the fits recover the exponents of a known loss surface, train.py's
flops_budget buys the steps it says, and `minigpt isoflop` trains a tiny study, reports it,
skips what is done, and names what did not finish."""

import json
import math

import numpy as np
import pytest
from conftest import ISOFLOP_TINY, call

from minigpt.commands import isoflop
from minigpt.commands import train as train_script
from minigpt.tools.scaling import fit_exponent, parabola_minimum


def chinchilla_loss(n, d):
    """Hoffmann et al.'s fitted L(N, D) (approach 3): E + A / N^alpha + B / D^beta."""
    return 1.69 + 406.4 / n**0.34 + 410.7 / d**0.28


def test_the_fits_recover_the_exponents_of_a_known_loss_surface():
    # with D = C / (6 N), the optimum of E + A/N^a + B/D^b is N_opt ∝ C^(b/(a+b))
    a_true = 0.28 / (0.34 + 0.28)
    runs = []
    for budget in (1e18, 1e19, 1e20, 1e21):
        centre = (budget / 6) ** a_true * 0.3  # near the optimum, not on it
        for n in np.geomspace(centre / 8, centre * 8, 7):
            d = budget / (6 * n)
            runs.append(
                {"budget": budget, "parameters": n, "tokens": d, "loss": chinchilla_loss(n, d)}
            )
    n_fit = fit_exponent(runs, "parameters", resamples=200)
    d_fit = fit_exponent(runs, "tokens", resamples=200)
    assert n_fit.a == pytest.approx(a_true, abs=0.01)
    assert d_fit.a == pytest.approx(1 - a_true, abs=0.01)
    assert n_fit.low <= n_fit.a <= n_fit.high and n_fit.resamples == 200
    # the optimum the line gives at a budget: near where that budget's loss is lowest (a
    # parabola's vertex on an asymmetric curve, off-centre sizes: within 15%)
    for budget in (1e18, 1e21):
        sizes = np.geomspace(1e6, 1e12, 20001)
        best = sizes[np.argmin(chinchilla_loss(sizes, budget / (6 * sizes)))]
        assert math.log(n_fit.optimum(budget) / best) == pytest.approx(0, abs=0.15)


def test_a_parabola_s_minimum_and_the_cases_without_one():
    n = np.array([1e3, 1e4, 1e5, 1e6])
    low = parabola_minimum(n, 2.0 + 0.1 * (np.log(n) - math.log(3e4)) ** 2)
    assert math.exp(low.log_x) == pytest.approx(3e4, rel=1e-6) and low.loss == pytest.approx(2.0)
    assert low.inside
    outside = parabola_minimum(n, 2.0 + 0.1 * (np.log(n) - math.log(1e8)) ** 2)
    assert not outside.inside
    assert parabola_minimum(n, -((np.log(n) - 9) ** 2)).log_x is None  # opens downward
    with pytest.raises(ValueError, match="3 different sizes"):
        parabola_minimum([1e3, 1e3, 1e4], [1.0, 1.1, 0.9])
    # a budget without a minimum is left out of the line, which the rest still gives
    runs = [
        {"budget": c, "parameters": n_, "loss": 2 + 0.1 * (math.log(n_) - math.log(c**0.5)) ** 2}
        for c in (1e8, 1e10)
        for n_ in n
    ]
    runs += [{"budget": 1e12, "parameters": n_, "loss": 5 - 0.01 * math.log(n_) ** 2} for n_ in n]
    fit = fit_exponent(runs, "parameters", resamples=10)
    assert fit.a == pytest.approx(0.5, abs=1e-6) and list(fit.fitted) == [1e8, 1e10]


TINY_STUDY = [
    "model.n_layer=1",
    "model.block_size=32",
    "data.batch_size=8",
    "trainer.limit_val_batches=4",
]


def test_flops_budget_buys_the_steps_it_says(tmp_path, cache_dir, capsys):
    model = ["model.n_embd=16", "model.n_head=2"]
    args = ["train.py", "experiment=isoflop", *TINY_STUDY, *model, f"paths.cache_dir={cache_dir}"]
    run_dir = tmp_path / "run"
    assert call(train_script.cli, [*args, "flops_budget=3e8", f"hydra.run.dir={run_dir}"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    per_step = metrics["training_flops"] / metrics["steps"]
    assert metrics["steps"] == int(3e8 // per_step) and metrics["steps"] > 10
    assert 3e8 - per_step < metrics["training_flops"] <= 3e8
    assert metrics["val_curve"][-1][0] == metrics["steps"]  # validated once, at the end
    assert call(train_script.cli, [*args, "flops_budget=1e3"]) == 2
    assert "flops_budget=1000 buys no optimizer step: one costs" in capsys.readouterr().err
    assert call(train_script.cli, [*args, "flops_budget=-1"]) == 2
    assert "flops_budget=-1 must be a positive number of FLOPs" in capsys.readouterr().err


def test_a_tiny_study_trains_fits_resumes_and_names_what_did_not_finish(
    tmp_path, cache_dir, capsys
):
    study = tmp_path / "study"
    argv = [*ISOFLOP_TINY, "--dir", str(study), f"paths.cache_dir={cache_dir}"]
    assert isoflop.main([*argv, "--dry-run"]) == 0
    assert not study.exists()
    assert isoflop.main(argv) == 0
    out = capsys.readouterr().out
    plan = json.loads((study / "plan.json").read_text())
    # 3 per budget, the lr check's 2 sizes x 2 scales at the middle budget
    assert len(plan["jobs"]) == 13 and out.count("] C") == 13
    assert {j["name"] for j in plan["jobs"] if j["lr_scale"] != 1} == {
        "C1.5e08_w8_lr0.5", "C1.5e08_w8_lr2", "C1.5e08_w24_lr0.5", "C1.5e08_w24_lr2"
    }  # fmt: skip
    for job in plan["jobs"]:
        metrics = json.loads((study / job["name"] / "metrics.json").read_text())
        assert metrics["status"] == "done" and metrics["steps"] == job["steps"]
        assert metrics["parameters"] == job["planned_parameters"]
    # the lr check's runs: both learning rates scaled (the preset's 0.05 and 0.01)
    overrides = (study / "C1.5e08_w8_lr2" / ".hydra" / "overrides.yaml").read_text()
    assert "optimizer.lr=0.1" in overrides and "optimizer.adamw_lr=0.02" in overrides
    report = (study / "isoflop.md").read_text()
    assert (study / "isoflop.png").stat().st_size > 0
    assert "| N_opt, every parameter |" in report and "Learning-rate check" in report
    assert report.count("\n| C") == 13  # every run in the table
    assert "Not finished" not in report
    # a rerun trains nothing; a different plan in the same directory is refused
    assert isoflop.main(argv) == 0
    assert "] C" not in capsys.readouterr().out
    assert isoflop.main([*argv, "--no-lr-check"]) == 2
    assert "holds a study with another plan" in capsys.readouterr().err
    # a job that did not finish is named, not dropped
    (study / "C4.5e08_w16" / "metrics.json").write_text(json.dumps({"status": "interrupted"}))
    assert isoflop.main([*argv, "--report-only"]) == 0
    out = capsys.readouterr().out
    assert "- C4.5e08_w16: interrupted" in (study / "isoflop.md").read_text()
    assert "warning: 1 job(s) not in the fits: C4.5e08_w16" in out
