"""A scaling study's report: final val/bpb against model size and training compute, and the
power law L(N) = a·N^-α + c fitted to it (`python -m minigpt.tools.sweep_report <dir> --scaling`,
after `python train.py experiment=scaling`).

N is the non-embedding parameter count (Kaplan et al. 2020's convention); compute is the
training FLOPs each run's metrics.json records (6·N_all + the attention term, per token, times
the tokens seen). The fit: for each c on a grid below the smallest loss, log(L - c) against
log N is a straight line (least squares gives a and α); the c whose line fits best wins.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class PowerLaw:
    """L(N) = a·N^-alpha + c, and the root-mean-square residual of the fit (in L's units)."""

    a: float
    alpha: float
    c: float
    rms: float

    def __call__(self, n):
        return self.a * np.power(n, -self.alpha) + self.c


def fit_power_law(n: list[float], loss: list[float], grid: int = 2000) -> PowerLaw:
    """The least-squares power law with an offset through the points (n, loss)."""
    n, loss = np.asarray(n, dtype=float), np.asarray(loss, dtype=float)
    if len(n) < 3:
        raise ValueError(f"a power law with an offset needs at least 3 runs, got {len(n)}")
    best = None
    for c in np.linspace(0.0, loss.min(), grid, endpoint=False):
        slope, intercept = np.polyfit(np.log(n), np.log(loss - c), 1)
        law = PowerLaw(math.exp(intercept), -slope, float(c), 0.0)
        law.rms = float(np.sqrt(np.mean((law(n) - loss) ** 2)))
        if best is None or law.rms < best.rms:
            best = law
    return best


def scaling_rows(jobs: list[Path]) -> tuple[list[dict], dict[str, str]]:
    """The finished jobs' size, compute and final val/bpb, smallest first; and the jobs left
    out, each with why (interrupted, failed, diverged, still running or no metrics.json)."""
    rows, left_out = [], {}
    for job in jobs:
        metrics_file = job / "metrics.json"
        if not metrics_file.is_file():
            left_out[job.name] = "no metrics.json: still running, or killed"
            continue
        metrics = json.loads(metrics_file.read_text())
        if metrics.get("status") != "done" or metrics.get("final_val_bpb") is None:
            status = metrics.get("status", "unknown")
            left_out[job.name] = status if status != "done" else "done without a validation"
            continue
        rows.append(
            {
                "job": metrics_file.parent.name,
                "n": metrics["non_embedding_parameters"],
                "flops": metrics["training_flops"],
                "bpb": metrics["final_val_bpb"],
                "loss": metrics["final_val_loss"],
            }
        )
    return sorted(rows, key=lambda r: r["n"]), left_out


def scaling_report(sweep_dir: Path, jobs: list[Path]) -> tuple[PowerLaw, dict[str, str]]:
    """Fits the law to the sweep's jobs, writes scaling.png (log-log: val/bpb against N and
    against FLOPs) and scaling.md into sweep_dir; returns the law and the jobs left out of
    it, with why."""
    rows, left_out = scaling_rows(jobs)
    law = fit_power_law([r["n"] for r in rows], [r["bpb"] for r in rows])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (by_size, by_compute) = plt.subplots(1, 2, figsize=(10, 4))
    n = np.array([r["n"] for r in rows], dtype=float)
    smooth = np.geomspace(n.min() / 1.5, n.max() * 1.5, 100)
    by_size.loglog(n, [r["bpb"] for r in rows], "o", label="runs")
    label = f"{law.a:.3g}·N^-{law.alpha:.3f} + {law.c:.3f}"
    by_size.loglog(smooth, law(smooth), "-", label=label)
    by_size.set_xlabel("non-embedding parameters N")
    by_size.set_ylabel("final val/bpb")
    by_size.legend(fontsize=8)
    by_compute.loglog([r["flops"] for r in rows], [r["bpb"] for r in rows], "o")
    for r in rows:
        by_compute.annotate(f"{r['n'] / 1e3:.0f}K", (r["flops"], r["bpb"]), fontsize=7)
    by_compute.set_xlabel("training FLOPs")
    by_compute.set_ylabel("final val/bpb")
    for ax in (by_size, by_compute):  # plain numbers on the loss axis, not 3×10^0
        ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.1f"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # they overlap
    fig.suptitle(f"{sweep_dir}: α = {law.alpha:.3f}, rms residual {law.rms:.4f} bpb", fontsize=9)
    fig.tight_layout()
    fig.savefig(sweep_dir / "scaling.png", dpi=100)
    plt.close(fig)
    lines = [
        f"# Scaling {sweep_dir}",
        "",
        f"L(N) = {law.a:.4g} · N^-{law.alpha:.4f} + {law.c:.4f} (val/bpb; N: non-embedding "
        f"parameters); rms residual {law.rms:.4f}",
        "",
        "| job | N | training FLOPs | final val/bpb | fit |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['job']} | {r['n']:,} | {r['flops']:.3g} | {r['bpb']:.4f} | {law(r['n']):.4f} |"
        for r in rows
    ]
    if left_out:
        lines += ["", f"Left out of the fit ({len(left_out)} of {len(rows) + len(left_out)} jobs):"]
        lines += [f"- job {job}: {why}" for job, why in left_out.items()]
    (sweep_dir / "scaling.md").write_text("\n".join(lines) + "\n")
    return law, left_out
