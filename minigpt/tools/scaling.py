"""Compute-optimal model size from IsoFLOP profiles (Hoffmann et al. 2022, "approach 2").

For each compute budget C, models of several sizes N are each trained on D = C / (FLOPs per
token) tokens. Per budget, a parabola in ln N through the final losses has its minimum at
N_opt(C) (and one in ln D at D_opt(C)); a least-squares line through ln N_opt against ln C
gives the exponent a of N_opt ∝ C^a (b for D_opt). Confidence intervals: the whole fit
redone on runs resampled with replacement within each budget (bootstrap).

Chinchilla found a ≈ b ≈ 0.5 counting every parameter; Kaplan et al. 2020, counting
non-embedding parameters at smaller scale, found N_opt ∝ C^0.73 (Pearce & Song 2024
trace most of the gap to those two choices). Both counts are fitted here.

`minigpt isoflop` (minigpt.commands.isoflop) trains the study; `isoflop_report` reads it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CHINCHILLA = 0.5  # N_opt and D_opt ∝ C^0.5 (Hoffmann et al. 2022, approach 2: 0.49 and 0.51)
KAPLAN = 0.73  # N_opt ∝ C^0.73, D_opt ∝ C^0.27 (Kaplan et al. 2020)
SIZES = ("parameters", "non_embedding_parameters", "tokens")


@dataclass
class Minimum:
    """A parabola's minimum: at exp(log_x), loss there; inside: within the sizes' range
    (outside, it extrapolates); none when the parabola opens downward."""

    log_x: float | None
    loss: float | None
    inside: bool
    coefficients: tuple[float, float, float]


def parabola_minimum(x, loss) -> Minimum:
    """The least-squares parabola through (ln x, loss), and where it is lowest."""
    log_x, loss = np.log(np.asarray(x, dtype=float)), np.asarray(loss, dtype=float)
    if len(np.unique(log_x)) < 3:
        raise ValueError(f"a parabola needs 3 different sizes, got {len(np.unique(log_x))}")
    c2, c1, c0 = np.polyfit(log_x, loss, 2)
    if c2 <= 0:
        return Minimum(None, None, False, (c2, c1, c0))
    vertex = -c1 / (2 * c2)
    low = c0 - c1 * c1 / (4 * c2)
    return Minimum(vertex, low, bool(log_x.min() <= vertex <= log_x.max()), (c2, c1, c0))


def power_law(budgets, optima) -> tuple[float, float]:
    """The least-squares line ln optimum = a ln C + k: (a, k)."""
    a, k = np.polyfit(np.log(np.asarray(budgets, float)), np.log(np.asarray(optima, float)), 1)
    return float(a), float(k)


@dataclass
class Exponent:
    """optimum ∝ C^a from the minima per budget: a, k (ln of the constant), a's bootstrap
    interval (95%) and how many resamples gave it (one where a parabola opens downward
    gives none). minima: every budget's, those without a minimum (None) left out of the
    line; a is None when fewer than 2 budgets have one."""

    size: str
    a: float | None
    k: float | None
    low: float
    high: float
    resamples: int
    minima: dict[float, Minimum] = field(repr=False)

    def optimum(self, budget: float) -> float:
        return math.exp(self.k) * budget**self.a

    @property
    def fitted(self) -> dict[float, Minimum]:
        """The budgets whose parabola has a minimum: the points of the line."""
        return {c: m for c, m in self.minima.items() if m.log_x is not None}


def fit_exponent(runs: list[dict], size: str, resamples: int = 2000, seed: int = 0) -> Exponent:
    """Exponent a of optimum(C) ∝ C^a for runs' size key ('parameters', 'tokens', ...): a
    parabola per budget (run['budget']) through run['loss'], a line through the minima;
    the interval from refitting runs resampled within each budget."""
    by_budget: dict[float, list[dict]] = {}
    for run in runs:
        by_budget.setdefault(run["budget"], []).append(run)
    by_budget = {c: rs for c, rs in sorted(by_budget.items()) if len({r[size] for r in rs}) >= 3}
    minima = {
        c: parabola_minimum([r[size] for r in rs], [r["loss"] for r in rs])
        for c, rs in by_budget.items()
    }
    budgets = [c for c, m in minima.items() if m.log_x is not None]
    if len(budgets) < 2:
        return Exponent(size, None, None, math.nan, math.nan, 0, minima)
    a, k = power_law(budgets, [math.exp(minima[c].log_x) for c in budgets])
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(resamples):
        optima = []
        for c in budgets:
            rs = by_budget[c]
            for _ in range(100):  # a resample needs 3 different sizes for its parabola
                pick = [rs[i] for i in rng.integers(0, len(rs), len(rs))]
                if len({r[size] for r in pick}) >= 3:
                    break
            else:
                pick = rs
            m = parabola_minimum([r[size] for r in pick], [r["loss"] for r in pick])
            if m.log_x is None:
                break
            optima.append(math.exp(m.log_x))
        else:
            samples.append(power_law(budgets, optima)[0])
    low, high = np.percentile(samples, [2.5, 97.5]) if samples else (math.nan, math.nan)
    return Exponent(size, a, k, float(low), float(high), len(samples), minima)


def study_runs(study_dir: Path) -> tuple[list[dict], dict[str, str], dict]:
    """The study's finished runs (budget, width, sizes, loss), the planned jobs that did not
    finish (job -> why), and the plan (plan.json, which `minigpt isoflop` writes)."""
    plan_file = study_dir / "plan.json"
    if not plan_file.is_file():
        raise FileNotFoundError(f"{plan_file} not found: is {study_dir} a `minigpt isoflop` study?")
    plan = json.loads(plan_file.read_text())
    runs, left_out = [], {}
    for job in plan["jobs"]:
        metrics_file = study_dir / job["name"] / "metrics.json"
        if not metrics_file.is_file():
            left_out[job["name"]] = "no metrics.json: not run, still running, or killed"
            continue
        metrics = json.loads(metrics_file.read_text())
        if metrics.get("status") != "done" or metrics.get("final_val_loss") is None:
            status = metrics.get("status", "unknown")
            why = metrics.get("error") or (status if status != "done" else "done without a val")
            left_out[job["name"]] = why
            continue
        runs.append(
            job
            | {
                "parameters": metrics["parameters"],
                "non_embedding_parameters": metrics["non_embedding_parameters"],
                "tokens": metrics["tokens_seen"],
                "flops": metrics["training_flops"],
                "loss": metrics["final_val_loss"],
                "bpb": metrics["final_val_bpb"],
                "wall_s": metrics["wall_time_s"],
            }
        )
    return runs, left_out, plan


@dataclass
class Study:
    """A study's fits: exponents by size key; the runs, the lr check's, the jobs left out."""

    exponents: dict[str, Exponent]
    runs: list[dict]
    lr_runs: list[dict]
    left_out: dict[str, str]


def isoflop_report(study_dir: Path, resamples: int = 2000) -> Study:
    """Fits the study in study_dir; writes isoflop.md (runs, minima, exponents, what was left
    out) and isoflop.png (IsoFLOP curves; N_opt and D_opt against C beside Chinchilla's and
    Kaplan's exponents) into it."""
    runs, left_out, plan = study_runs(study_dir)
    study_runs_only = [r for r in runs if r.get("lr_scale", 1.0) == 1.0]
    lr_runs = [r for r in runs if r.get("lr_scale", 1.0) != 1.0]
    exponents = {s: fit_exponent(study_runs_only, s, resamples) for s in SIZES}
    study = Study(exponents, study_runs_only, lr_runs, left_out)
    plot_study(study, study_dir / "isoflop.png")
    (study_dir / "isoflop.md").write_text(report_text(study, plan, study_dir))
    return study


def report_text(study: Study, plan: dict, study_dir: Path) -> str:
    n, n_core, d = (study.exponents[s] for s in SIZES)

    def row(what: str, fit: Exponent, chinchilla, kaplan) -> str:
        if fit.a is None:
            none = "none: fewer than 2 budgets have a minimum"
            return f"| {what} | {none} | | | {chinchilla} | {kaplan} |"
        return (
            f"| {what} | {fit.a:.3f} | {fit.low:.3f} to {fit.high:.3f} | {fit.resamples} "
            f"| {chinchilla} | {kaplan} |"
        )

    lines = [
        f"# IsoFLOP study {study_dir}",
        "",
        f"{plan['description']}",
        "",
        "| size | exponent (optimum ∝ C^a) | 95% interval | resamples | Chinchilla | Kaplan |",
        "| --- | --- | --- | --- | --- | --- |",
        row("N_opt, every parameter", n, CHINCHILLA, ""),
        row("N_opt, non-embedding parameters", n_core, "", KAPLAN),
        row("D_opt, tokens", d, CHINCHILLA, f"{1 - KAPLAN:.2f}"),
        "",
        "| budget C (FLOPs) | N_opt | D_opt | D_opt / N_opt | loss there | minimum |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for c, m in n.minima.items():
        md = d.minima[c]
        if m.log_x is None or md.log_x is None:
            lines.append(f"| {c:.3g} | | | | | none: the loss does not dip (not in the line) |")
            continue
        n_opt, d_opt = math.exp(m.log_x), math.exp(md.log_x)
        where = "inside the sizes" if m.inside else "OUTSIDE the sizes (extrapolated)"
        lines.append(
            f"| {c:.3g} | {n_opt:,.0f} | {d_opt:,.0f} | {d_opt / n_opt:.1f} | {m.loss:.4f} "
            f"| {where} |"
        )
    lines += [
        "",
        "| job | budget | batch | width | parameters | non-embedding | tokens | steps "
        "| training FLOPs | val loss | val bpb | wall s |",
        "|" + " --- |" * 12,
    ]
    for r in sorted(study.runs + study.lr_runs, key=lambda r: (r["budget"], r["width"])):
        lines.append(
            f"| {r['name']} | {r['budget']:.3g} | {r['batch']} | {r['width']} "
            f"| {r['parameters']:,} | {r['non_embedding_parameters']:,} | {r['tokens']:,} "
            f"| {r['steps']} "
            f"| {r['flops']:.3g} | {r['loss']:.4f} | {r['bpb']:.4f} | {r['wall_s']:.0f} |"
        )
    if study.lr_runs:
        lines += ["", "Learning-rate check (both learning rates scaled; val loss):", ""]
        lines += ["| budget | width | " + " | ".join(f"×{s:g}" for s in lr_scales(study)) + " |"]
        lines += ["|" + " --- |" * (2 + len(lr_scales(study)))]
        for (c, w), losses in lr_table(study).items():
            cells = [f"{losses[s]:.4f}" if s in losses else "" for s in lr_scales(study)]
            lines.append(f"| {c:.3g} | {w} | " + " | ".join(cells) + " |")
    total = len(study.runs) + len(study.lr_runs) + len(study.left_out)
    if study.left_out:
        lines += ["", f"Not finished, so not in the fits ({len(study.left_out)} of {total} jobs):"]
        lines += [f"- {job}: {why}" for job, why in study.left_out.items()]
    return "\n".join(lines) + "\n"


def lr_scales(study: Study) -> list[float]:
    return sorted({r["lr_scale"] for r in study.lr_runs} | {1.0})


def lr_table(study: Study) -> dict[tuple[float, int], dict[float, float]]:
    """(budget, width) -> {lr scale: val loss} for the sizes the learning-rate check ran."""
    table: dict[tuple[float, int], dict[float, float]] = {}
    for r in study.lr_runs:
        table.setdefault((r["budget"], r["width"]), {})[r["lr_scale"]] = r["loss"]
    for r in study.runs:
        if (r["budget"], r["width"]) in table:
            table[(r["budget"], r["width"])][1.0] = r["loss"]
    return table


def plot_study(study: Study, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    n, d = study.exponents["parameters"], study.exponents["tokens"]
    fig, (curves, optima) = plt.subplots(1, 2, figsize=(11, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (c, m) in enumerate(n.minima.items()):
        color = colors[i % len(colors)]
        rs = sorted((r for r in study.runs if r["budget"] == c), key=lambda r: r["parameters"])
        x = np.array([r["parameters"] for r in rs], float)
        curves.semilogx(x, [r["loss"] for r in rs], "o", color=color, label=f"C = {c:.2g}")
        smooth = np.geomspace(x.min(), x.max(), 100)
        curves.semilogx(smooth, np.polyval(m.coefficients, np.log(smooth)), "-", color=color)
        if m.log_x is not None:
            curves.semilogx(math.exp(m.log_x), m.loss, "*", color=color, markersize=14)
    curves.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # they overlap
    curves.set_xlabel("parameters N")
    curves.set_ylabel("final val loss (nats per token)")
    curves.set_title("IsoFLOP curves (★: the parabola's minimum)", fontsize=10)
    curves.legend(fontsize=8)
    for fit, name, color, kaplan in (
        (n, "N_opt", colors[0], KAPLAN),
        (d, "D_opt", colors[1], 1 - KAPLAN),
    ):
        if fit.a is None:
            continue
        budgets = np.array(list(fit.fitted), float)
        line = np.geomspace(budgets.min() / 1.5, budgets.max() * 1.5, 50)
        middle = math.exp(np.log(budgets).mean())
        points = [math.exp(m.log_x) for m in fit.fitted.values()]
        optima.loglog(budgets, points, "o", color=color)
        label = f"{name} ∝ C^{fit.a:.2f} [{fit.low:.2f}, {fit.high:.2f}]"
        optima.loglog(line, [fit.optimum(c) for c in line], "-", color=color, label=label)
        anchor = fit.optimum(middle)  # the published exponents through the middle budget
        for exponent, style, who in ((CHINCHILLA, "--", "Chinchilla"), (kaplan, ":", "Kaplan")):
            optima.loglog(
                line,
                anchor * (line / middle) ** exponent,
                style,
                color=color,
                alpha=0.6,
                label=f"{who} {exponent:.2f}",
            )
    optima.set_xlabel("training FLOPs C")
    optima.set_ylabel("N_opt (parameters), D_opt (tokens)")
    optima.set_title("compute-optimal size and tokens", fontsize=10)
    optima.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
