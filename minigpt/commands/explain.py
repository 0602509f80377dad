"""Look inside a trained model: `python explain.py [ckpt_path=...] prompt="..."`.

Writes into out_dir (default: explain/ in the checkpoint's run directory):
- attention.png: the attention weights of every layer and head over the prompt's first
  `attention_tokens` tokens, tokens on the axes;
- surprise.html: the prompt with each token's background coloured by its loss, the model's
  top candidates on hover;
and prints the prompt coloured by surprise with its most surprising tokens (the terminal's
version of the page). Without ckpt_path it uses the newest run's best checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from minigpt.commands import run_command
from minigpt.commands.console import command, use_cpu_threads
from minigpt.commands.prompts import encode_prompt, read_prompt
from minigpt.core.checkpoint import model_from_checkpoint, open_checkpoint
from minigpt.core.inspection import (
    attention_maps,
    plot_attention,
    surprise_html,
    surprise_text,
    token_label,
    token_surprise,
)
from minigpt.core.options import is_integer
from minigpt.core.sampling import unencodable


def explain(cfg: DictConfig) -> dict[str, Path]:
    use_cpu_threads(cfg.threads)
    path, checkpoint = open_checkpoint(cfg.ckpt_path, cfg.runs_dir)
    model, tokenizer = model_from_checkpoint(checkpoint, path)
    prompt = read_prompt(cfg)
    if problem := unencodable(tokenizer, prompt):
        raise ValueError(f"prompt: {problem}")
    # sample.py's rule: a prompt longer than the context is cut to its end, with a warning
    ids = encode_prompt(prompt, tokenizer, model.config.block_size)[-model.config.block_size :]
    if len(ids) < 2:
        raise ValueError(f"prompt={prompt!r} has {len(ids)} token(s): give at least 2")
    if not is_integer(cfg.top_k) or cfg.top_k < 1:
        raise ValueError(f"top_k={cfg.top_k!r} must be an integer >= 1 (the candidates shown)")
    if cfg.attention_tokens < 2:
        raise ValueError(f"attention_tokens={cfg.attention_tokens} must be at least 2")
    out = Path(cfg.out_dir) if cfg.out_dir else path.parent.parent / "explain"
    out.mkdir(parents=True, exist_ok=True)
    shown = ids[: cfg.attention_tokens]
    labels = [token_label(tokenizer.decode([i])) for i in shown]
    figure = plot_attention(attention_maps(model, shown), labels, title=str(path))
    figure.savefig(out / "attention.png", dpi=110)
    tokens = token_surprise(model, tokenizer, ids, k=cfg.top_k)
    (out / "surprise.html").write_text(surprise_html(tokens, title=str(path)), encoding="utf-8")
    color = sys.stdout.isatty() if cfg.color == "auto" else bool(cfg.color)
    print(surprise_text(tokens, color=color))
    files = {"attention": out / "attention.png", "surprise": out / "surprise.html"}
    print(f"wrote {files['attention']} and {files['surprise']}", file=sys.stderr)
    return files


@command("explain")
def main(cfg: DictConfig) -> None:
    explain(cfg)


if __name__ == "__main__":
    run_command(main)
