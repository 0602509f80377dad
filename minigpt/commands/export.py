"""Export a checkpoint to Hugging Face transformers: `python export.py [ckpt_path=...] out_dir=...`.

Without ckpt_path it uses the newest run's best checkpoint, as `sample.py` does. Writes
out_dir with config.json, model.safetensors and the tokenizer, which
`transformers.AutoModelForCausalLM.from_pretrained(out_dir)` and
`AutoTokenizer.from_pretrained(out_dir)` load with no custom code (minigpt.tools.convert maps the
model's options onto GPT-2, GPT-NeoX or Llama, and refuses options none of them computes).
The directory is written beside out_dir and renamed into place: an existing out_dir is
never overwritten.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from omegaconf import DictConfig

from minigpt.commands import run_command
from minigpt.commands.console import command, use_cpu_threads
from minigpt.core.checkpoint import model_from_checkpoint, open_checkpoint
from minigpt.tools.convert import export_hf, hf_architecture


def export(cfg: DictConfig) -> Path:
    use_cpu_threads(cfg.threads)
    if not cfg.out_dir:
        raise ValueError(
            "out_dir is not set: name the directory to write, e.g. out_dir=hf/my-model"
        )
    out = Path(cfg.out_dir)
    if out.exists():
        raise ValueError(f"out_dir={out} exists: name a new directory (nothing is overwritten)")
    path, checkpoint = open_checkpoint(cfg.ckpt_path, cfg.runs_dir)
    model, tokenizer = model_from_checkpoint(checkpoint, path)
    hf_architecture(model.config)  # refuses options with no counterpart before writing
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        name = export_hf(model, tokenizer, staging)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"{name} ({model.num_parameters():,} parameters) -> {out}")
    return out


@command("export")
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    run_command(main)
