"""Sample text from a trained model: `python sample.py [ckpt_path=...] prompt="..." ...`.

Without ckpt_path it uses the best checkpoint of the newest finished run under runs_dir.
Decoding: temperature, top_k and top_p combine; greedy=true (or temperature=0) takes the
most likely token every time.
"""

from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig

from minigpt.checkpoint import latest_best_checkpoint, load_checkpoint
from minigpt.cli import exit_on_user_error
from minigpt.sampling import check_sampling_args, generate


def sample(cfg: DictConfig) -> list[str]:
    """The generated texts (prompt included), one per sample."""
    temperature = 0.0 if cfg.greedy else float(cfg.temperature)
    check_sampling_args(temperature, cfg.top_k, cfg.top_p)
    if cfg.max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens={cfg.max_new_tokens} must be a positive integer")
    if cfg.num_samples <= 0:
        raise ValueError(f"num_samples={cfg.num_samples} must be a positive integer")
    prompt = str(cfg.prompt)
    if not prompt:
        raise ValueError('prompt is empty: give at least one character, e.g. prompt="\\n"')
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    ckpt_path = cfg.ckpt_path or latest_best_checkpoint(cfg.runs_dir)
    model, tokenizer = load_checkpoint(ckpt_path, device)
    context = torch.tensor([tokenizer.encode(prompt)] * cfg.num_samples, device=device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    out = generate(model, context, cfg.max_new_tokens, temperature, cfg.top_k, cfg.top_p, generator)
    return [tokenizer.decode(row) for row in out.tolist()]


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    for i, text in enumerate(sample(cfg)):
        if cfg.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        print(text)


if __name__ == "__main__":
    main()
