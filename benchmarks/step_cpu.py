"""The speedrun recipe's training step, this checkout against an earlier one, in one process.

    python benchmarks/step_cpu.py --before path/to/an/earlier/checkout [--rounds 60]
        [--experiment speedrun_cpu]

Each checkout's `minigpt.core.model` and `minigpt.training.optimizers` are loaded side by
side (the earlier one's under other module names) and given its own composition of
`experiment=<name>`: the model, the same weights, and its MuonWithAdamW with the
experiment's options. One batch of the experiment's shape; then, rounds alternating
between the two, the forward and backward pass, and the optimizer's part of a step
(gradient clipping at 1.0, the step, zeroing the gradients). Prints the medians and the
ratios now / before. No Lightning: the loop's own cost is the same code in both.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path, name: str):
    """The module at path, registered as `name` (two versions of a module side by side)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def setup(checkout: Path, tag: str, experiment: str, state: dict | None):
    """The checkout's model (state's weights when given), optimizer and config."""
    model_module = load(checkout / "minigpt/core/model.py", f"model_{tag}")
    optimizers = load(checkout / "minigpt/training/optimizers.py", f"optimizers_{tag}")
    with initialize_config_dir(config_dir=str(checkout / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"])
    fields = OmegaConf.to_container(cfg.model, resolve=True) | {"vocab_size": 65}
    torch.manual_seed(0)
    model = model_module.GPT(model_module.GPTConfig(**fields))
    if state is not None:
        model.load_state_dict(state)
    options = OmegaConf.to_container(cfg.optimizer, resolve=True)
    for key in ("_target_", "_partial_"):
        options.pop(key)
    optimizer = optimizers.MuonWithAdamW(model.param_groups(), **options)
    return model, optimizer, cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="an earlier checkout")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--experiment", default="speedrun_cpu")
    args = parser.parse_args()
    args.before = args.before.resolve()  # Hydra composes from absolute directories only
    if not (args.before / "minigpt/core/model.py").is_file():
        sys.exit(f"error: {args.before} is not a minigpt checkout (no minigpt/core/model.py)")
    now, now_optimizer, cfg = setup(ROOT, "now", args.experiment, None)
    before, before_optimizer, _ = setup(args.before, "before", args.experiment, now.state_dict())
    generator = torch.Generator().manual_seed(0)
    shape = (cfg.data.batch_size, cfg.model.block_size)
    x, y = (torch.randint(0, 65, shape, generator=generator) for _ in range(2))

    def forward_backward(model) -> float:
        start = time.perf_counter()
        model(x, y)[1].backward()
        return time.perf_counter() - start

    def optimizer_step(model, optimizer) -> float:
        start = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - start

    times = {key: [] for key in ("fb_now", "fb_before", "opt_now", "opt_before")}
    for round_ in range(args.rounds + 5):  # the first 5 warm up
        pairs = [("now", now, now_optimizer), ("before", before, before_optimizer)]
        for tag, model, optimizer in pairs if round_ % 2 else pairs[::-1]:
            fb, opt = forward_backward(model), optimizer_step(model, optimizer)
            if round_ >= 5:
                times[f"fb_{tag}"].append(fb)
                times[f"opt_{tag}"].append(opt)
    ms = {key: 1000 * statistics.median(values) for key, values in times.items()}
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; experiment={args.experiment}, batch {shape}, "
        f"{args.rounds} rounds"
    )
    print(f"{'median ms':28}{'now':>10}{'before':>10}{'now/before':>12}")
    for label, key in [("forward + backward", "fb"), ("optimizer (clip, step, zero)", "opt")]:
        a, b = ms[f"{key}_now"], ms[f"{key}_before"]
        print(f"{label:28}{a:>10.2f}{b:>10.2f}{a / b:>12.3f}")
    total_now, total_before = ms["fb_now"] + ms["opt_now"], ms["fb_before"] + ms["opt_before"]
    print(f"{'sum':28}{total_now:>10.2f}{total_before:>10.2f}{total_now / total_before:>12.3f}")


if __name__ == "__main__":
    main()
