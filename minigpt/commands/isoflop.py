"""An IsoFLOP study: `minigpt isoflop [options] [overrides]` (or `make isoflop ARGS=...`).

For each compute budget C (--budgets, FLOPs) it trains `experiment=isoflop` models of the
widths around where C would be spent on about --tokens-per-parameter tokens per parameter
(--per-budget of --widths; one shape rule: the preset's depth, width // --head-size heads),
each for the steps that C buys it (train.py's flops_budget), one after the other in this
process; then, with --lr-check, the smallest and largest model of the middle budget again
with both learning rates scaled by 0.5 and 2. Each job writes <dir>/<job>/ (metrics.json,
logs, best checkpoint); a rerun skips the finished jobs and trains the rest again from the
start. Then minigpt.tools.scaling fits N_opt ∝ C^a and D_opt ∝ C^b: <dir>/isoflop.md and
isoflop.png. Overrides (key=value) go to every run, e.g. model.n_layer=2.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from minigpt.commands import CONFIG_DIR, run_in_process
from minigpt.commands import train as train_command
from minigpt.core.model import GPT, GPTConfig
from minigpt.tools.scaling import isoflop_report

BUDGETS = [3.3e11, 1e12, 3e12, 9e12]
# sequences per batch, by budget: at 3.3e11 FLOPs a batch of 8 ends far lower than one of 32
# (the larger models get 4x the steps); at 1e12 the two tie (docs/scaling.md)
BATCH_SIZES = [8, 32, 32, 32]
WIDTHS = [16, 24, 32, 48, 64, 96, 128, 192, 256]
LR_SCALES = [0.5, 2.0]


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="minigpt isoflop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=BUDGETS, help="FLOPs each")
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=BATCH_SIZES,
        help="data.batch_size for every budget (one value) or for each (in --budgets' order)",
    )
    parser.add_argument("--widths", type=int, nargs="+", default=WIDTHS, help="model.n_embd")
    parser.add_argument(
        "--head-size",
        type=int,
        default=32,
        help="the shape rule: max(1, width // this) heads (the default model's: 32)",
    )
    parser.add_argument("--per-budget", type=int, default=5, help="sizes trained per budget")
    parser.add_argument(
        "--tokens-per-parameter",
        type=float,
        default=20.0,
        help="where each budget's sizes are centred (Chinchilla's ~20)",
    )
    parser.add_argument("--lr-check", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--dir", type=Path, default=Path("outputs/isoflop"), help="the study")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, train nothing")
    parser.add_argument("--report-only", action="store_true", help="fit what has finished")
    # key=value words are overrides wherever they stand (--budgets 1e12 3e12 model.n_layer=2)
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    args = parser.parse_args([a for a in argv if a not in overrides])
    if args.per_budget < 3:
        parser.error(f"--per-budget={args.per_budget}: a parabola needs at least 3 sizes")
    if args.per_budget > len(args.widths):
        parser.error(f"--per-budget={args.per_budget} is more than the {len(args.widths)} widths")
    if len(args.batch_sizes) not in (1, len(args.budgets)):
        parser.error(
            f"--batch-sizes: {len(args.batch_sizes)} given for {len(args.budgets)} budgets: give "
            "one for all, or one per budget (the default goes with the default budgets)"
        )
    if any(o.startswith("data.batch_size=") for o in overrides):
        parser.error("data.batch_size: give it as --batch-sizes (one per budget, or one for all)")
    if len(args.budgets) < 2:
        parser.error("--budgets: a line through the minima needs at least 2 budgets (3+ advised)")
    return args, overrides


def composed(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=["experiment=isoflop", *overrides])


def model_configs(cfg: DictConfig, widths: list[int], head_size: int) -> dict[int, dict]:
    """width -> the preset's model config at that width (max(1, width // head_size)
    heads), with the vocabulary of the run's data."""
    data = instantiate(cfg.data)
    data.setup()
    model = train_command.plain(cfg.model) | {"vocab_size": data.vocab_size}
    return {w: model | {"n_embd": w, "n_head": max(1, w // head_size)} for w in widths}


def plan(args: argparse.Namespace, cfg: DictConfig, overrides: list[str]) -> dict:
    """The jobs: per budget, the --per-budget widths around the one whose tokens per
    parameter come nearest --tokens-per-parameter; then the learning-rate check's."""
    widths = sorted(set(args.widths))
    configs = model_configs(cfg, widths, args.head_size)
    models = {}
    for width in widths:
        try:
            with torch.device("meta"):  # counted, never allocated
                models[width] = GPT(GPTConfig(**configs[width]))
        except ValueError as err:
            raise ValueError(f"--widths: width {width} makes no model: {err}") from err
    sizes = {w: (m.num_parameters(), m.flops_per_token()) for w, m in models.items()}
    batches = (
        args.batch_sizes * len(args.budgets) if len(args.batch_sizes) == 1 else args.batch_sizes
    )
    batch_of = dict(zip(args.budgets, batches, strict=True))
    jobs = []
    for budget in sorted(args.budgets):
        ratio = {w: budget / (sizes[w][1] * sizes[w][0]) for w in widths}
        centre = min(widths, key=lambda w: abs(math.log(ratio[w] / args.tokens_per_parameter)))
        first = min(
            max(0, widths.index(centre) - args.per_budget // 2), len(widths) - args.per_budget
        )
        for width in widths[first : first + args.per_budget]:
            jobs.append(job(cfg, budget, batch_of[budget], configs[width], sizes[width][0], 1.0))
    if args.lr_check:  # at the middle budget (the lower of two middles)
        budget = sorted(args.budgets)[(len(args.budgets) - 1) // 2]
        window = [j["width"] for j in jobs if j["budget"] == budget]
        for width in (window[0], window[-1]):
            jobs += [
                job(cfg, budget, batch_of[budget], configs[width], sizes[width][0], s)
                for s in LR_SCALES
            ]
    model = cfg.model
    batches = ", ".join(str(batch_of[c]) for c in sorted(batch_of))
    description = (
        f"Budgets {', '.join(f'{c:.3g}' for c in sorted(args.budgets))} FLOPs; per budget the "
        f"{args.per_budget} widths of {widths} around {args.tokens_per_parameter:g} tokens "
        f"per parameter. Shape rule: {model.n_layer} layers, width varies, max(1, width // "
        f"{args.head_size}) heads; context {model.block_size}; sequences per batch by budget: "
        f"{batches}. N counts every parameter (the tied embedding once); FLOPs per token = "
        "6 N (N without a learned position table) + 12 L H Q T for attention (PaLM's count, "
        "full context); D = C / that. Every size trains with the same learning rates (Muon's "
        f"scaled per matrix by its shape). Overrides: `{' '.join(overrides) or 'none'}`."
    )
    return {"description": description, "overrides": overrides, "jobs": jobs}


def job(
    cfg: DictConfig, budget: float, batch: int, model: dict, parameters: int, lr_scale: float
) -> dict:
    """One run of the study: its name, budget, batch, width, learning-rate scale, size and
    the steps (and so FLOPs) the budget buys it, as train.py's flops_budget counts them."""
    cfg.flops_budget, cfg.data.batch_size = budget, batch
    steps, step_flops = train_command.budget_steps(cfg, model)
    name = f"C{budget:.3g}_w{model['n_embd']}" + (f"_lr{lr_scale:g}" if lr_scale != 1.0 else "")
    return {
        "name": name.replace("+", ""),
        "budget": budget,
        "batch": batch,
        "width": model["n_embd"],
        "heads": model["n_head"],
        "lr_scale": lr_scale,
        "planned_parameters": parameters,
        "steps": steps,
        "job_flops": steps * step_flops,
    }


def job_overrides(cfg: DictConfig, job: dict, overrides: list[str], run_dir: Path) -> list[str]:
    args = [
        "experiment=isoflop",
        f"flops_budget={job['budget']!r}",
        f"model.n_embd={job['width']}",
        f"model.n_head={job['heads']}",
        f"hydra.run.dir={run_dir}",
    ]
    if job["lr_scale"] != 1.0:
        scale = job["lr_scale"]
        args += [
            f"optimizer.lr={cfg.optimizer.lr * scale!r}",
            f"optimizer.adamw_lr={cfg.optimizer.adamw_lr * scale!r}",
        ]
    return args + overrides + [f"data.batch_size={job['batch']}"]


def print_plan(study: dict) -> None:
    print(study["description"])
    for j in study["jobs"]:
        print(
            f"  {j['name']}: {j['planned_parameters']:,} parameters, {j['steps']} steps, "
            f"{j['job_flops']:.3g} FLOPs"
        )


def finished(run_dir: Path) -> bool:
    metrics = run_dir / "metrics.json"
    return metrics.is_file() and json.loads(metrics.read_text()).get("status") == "done"


def run_study(study_dir: Path, study: dict, cfg: DictConfig) -> None:
    jobs = study["jobs"]
    total = sum(j["job_flops"] for j in jobs)
    done = sum(j["job_flops"] for j in jobs if finished(study_dir / j["name"]))
    started, flops_now = time.monotonic(), 0.0
    for number, job_ in enumerate(jobs, 1):
        run_dir = study_dir / job_["name"]
        if finished(run_dir):
            continue
        elapsed = time.monotonic() - started
        left = f", ~{(total - done) * elapsed / flops_now / 60:.0f} min left" if flops_now else ""
        print(
            f"[{number}/{len(jobs)}] {job_['name']}: width {job_['width']}, "
            f"{job_['planned_parameters']:,} parameters, {job_['steps']} steps; "
            f"{done / total:.0%} of the study's FLOPs done{left}",
            flush=True,
        )
        if run_dir.exists():  # unfinished: trained again from the start
            shutil.rmtree(run_dir)
        argv = [
            str(Path(CONFIG_DIR).parent / "train.py"),
            *job_overrides(cfg, job_, study["overrides"], run_dir),
        ]
        status = run_in_process(train_command.cli, argv)  # torch and Lightning imported once
        if status in (130, 143):  # Ctrl-C or SIGTERM: the study stops here
            sys.exit(status)
        if status != 0 or not finished(run_dir):
            print(f"  {job_['name']} did not finish (exit status {status}): see {run_dir}")
        done += job_["job_flops"]
        flops_now += job_["job_flops"]


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse(sys.argv[1:] if argv is None else argv)
    study_dir: Path = args.dir
    plan_file = study_dir / "plan.json"
    if not args.report_only:
        cfg = composed(overrides)
        try:
            study = plan(args, cfg, overrides)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if args.dry_run:
            print_plan(study)
            return 0
        if plan_file.is_file() and json.loads(plan_file.read_text()) != study:
            print(
                f"error: {study_dir} holds a study with another plan ({plan_file}): give "
                "another --dir, or the same options and overrides to continue it",
                file=sys.stderr,
            )
            return 2
        study_dir.mkdir(parents=True, exist_ok=True)
        plan_file.write_text(json.dumps(study, indent=1))
        print_plan(study)
        run_study(study_dir, study, cfg)
    try:
        result = isoflop_report(study_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((study_dir / "isoflop.md").read_text())
    for name, fit in (
        ("N_opt", result.exponents["parameters"]),
        ("D_opt", result.exponents["tokens"]),
    ):
        if fit.a is None:
            print(f"{name}: no exponent (fewer than 2 budgets whose loss dips)")
        else:
            print(f"{name} ∝ C^{fit.a:.3f} (95%: {fit.low:.3f} to {fit.high:.3f})")
    print(f"wrote isoflop.md, isoflop.png in {study_dir}")
    if result.left_out:
        print(
            f"warning: {len(result.left_out)} job(s) not in the fits: {', '.join(result.left_out)}"
        )
    return 0
