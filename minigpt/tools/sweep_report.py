"""A report of a Hydra multirun: `python -m minigpt.tools.sweep_report outputs/<date>/<time>`.

Writes `report.md` and `report.csv` (one row per job: its overrides, best val/loss, val/bpb,
steps, wall time, checkpoint; best first) and `val_curves.png` (every finished job's
validation curve) into the multirun directory. The Markdown table and the plot show only the
overrides that differ between jobs (those common to all are listed once); the CSV has them
all. Jobs without metrics.json are listed as running or failed; jobs whose loss diverged,
as diverged.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import yaml

COLUMNS = [
    "job",
    "status",
    "overrides",
    "best val/loss",
    "val/bpb",
    "steps",
    "wall s",
    "checkpoint",
]


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The numbered job directories of a multirun, in job order."""
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(jobs, key=lambda p: int(p.name))


def job_row(job: Path) -> dict:
    overrides_file = job / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
    overrides = overrides or []
    row = {"job": int(job.name), "overrides": " ".join(overrides), "curve": []}
    row["override_list"] = overrides
    metrics_file = job / "metrics.json"
    if not metrics_file.exists():
        return row | {"status": "running or failed"}
    try:
        metrics = json.loads(metrics_file.read_text())
    except (ValueError, OSError):
        return row | {"status": f"unreadable {metrics_file}"}
    status = metrics.get("status") or ("diverged" if metrics.get("diverged") else "done")
    return row | {
        "status": status,
        "best val/loss": metrics.get("best_val_loss"),
        "val/bpb": metrics.get("best_val_bpb"),
        "steps": metrics.get("steps"),
        "wall s": metrics.get("wall_time_s"),
        "checkpoint": metrics.get("best_checkpoint"),
        "curve": [
            (s, v) for s, v in metrics.get("val_curve", []) if v is not None and math.isfinite(v)
        ],
    }


def sort_key(row: dict):
    loss = row.get("best val/loss")
    return (loss is None, loss if loss is not None else 0.0, row["job"])


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def cell(row: dict, column: str) -> str:
    if column == "overrides":
        return row["differs"]
    return fmt(row.get(column), 1 if column == "wall s" else 4)


def write_report(sweep_dir: Path) -> list[dict]:
    """Writes report.md, report.csv and val_curves.png; returns the rows, best first."""
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no multirun directory at {sweep_dir}")
    rows = sorted((job_row(job) for job in job_dirs(sweep_dir)), key=sort_key)
    if not rows:
        raise ValueError(f"{sweep_dir} has no numbered job directories: is it a multirun?")
    shared = [o for o in rows[0]["override_list"] if all(o in r["override_list"] for r in rows)]
    common = shared if len(rows) > 1 else []  # a lone job's overrides all stay in its row
    for row in rows:
        row["differs"] = " ".join(o for o in row["override_list"] if o not in common)
    with open(sweep_dir / "report.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows([[fmt(row.get(c)) for c in COLUMNS] for row in rows])
    lines = [f"# Sweep {sweep_dir}", ""]
    if common:
        lines += [f"Every job: `{' '.join(common)}`", ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row, c) for c in COLUMNS) + " |" for row in rows]
    (sweep_dir / "report.md").write_text("\n".join(lines) + "\n")
    plot_curves(rows, sweep_dir / "val_curves.png")
    return rows


def plot_curves(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for row in rows:
        if row["curve"]:
            steps, losses = zip(*row["curve"], strict=True)
            ax.plot(steps, losses, marker="o", label=f"{row['job']}: {row['differs']}"[:80])
    ax.set_xlabel("step")
    ax.set_ylabel("val/loss")
    ax.set_title("validation curves, best first")
    if any(row["curve"] for row in rows):
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (outputs/<date>/<time>)")
    args = parser.parse_args(argv)
    try:
        rows = write_report(args.sweep_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((args.sweep_dir / "report.md").read_text())
    print(f"{len(rows)} jobs; wrote report.md, report.csv, val_curves.png in {args.sweep_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
