"""Loading a trained model back from a Lightning checkpoint, and finding the newest one."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from minigpt.model import GPT, GPTConfig
from minigpt.tokenizers import CharTokenizer, tokenizer_from_dict


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[GPT, CharTokenizer]:
    """The GPT (in eval mode) and tokenizer stored in a checkpoint written by train.py.
    Loads with weights_only=True: checkpoints hold tensors and plain data only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: pass ckpt_path=<a .ckpt file>")
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    hparams = checkpoint.get("hyper_parameters", {})
    if "model" not in hparams or not hparams.get("tokenizer"):
        raise ValueError(f"{path} was not written by minigpt's train.py (no model/tokenizer)")
    model = GPT(GPTConfig(**hparams["model"]))
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    model.load_state_dict(state)
    return model.to(device).eval(), tokenizer_from_dict(hparams["tokenizer"])


def latest_best_checkpoint(runs_dir: str | Path = "outputs") -> Path:
    """The best checkpoint of the most recently finished run under runs_dir (single runs and
    multirun jobs alike), read from the runs' metrics.json files."""
    runs_dir = Path(runs_dir)
    finished = []
    for metrics_file in runs_dir.rglob("metrics.json"):
        best = json.loads(metrics_file.read_text()).get("best_checkpoint")
        if best and Path(best).is_file():
            finished.append((metrics_file.stat().st_mtime, Path(best)))
    if not finished:
        raise FileNotFoundError(
            f"no finished run with a checkpoint under {runs_dir}/: train one with `make train` "
            "or pass ckpt_path=<a .ckpt file>"
        )
    return max(finished)[1]
