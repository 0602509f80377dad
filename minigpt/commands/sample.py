"""Sample text from a trained model: `python sample.py [ckpt_path=...] prompt="..." ...`.

Without ckpt_path it uses the newest run under runs_dir (its best.ckpt, or its last.ckpt
before a first validation), and says on stderr which checkpoint, step and val/loss it loaded.
In `prompt` and `stop`, `\\n` and `\\t` mean a line break and a tab (`\\\\` a backslash).
Decoding: temperature, top_k and top_p combine; greedy=true (or temperature=0) takes the
most likely token every time. One sample streams to the terminal as it is generated;
several are generated as one batch. Generation stops at max_new_tokens or, for each sample,
at the first of the `stop` strings (which is not printed). Speed goes to stderr.
"""

from __future__ import annotations

import re
import sys
import time

import torch
from omegaconf import DictConfig, ListConfig

from minigpt.commands import run_command
from minigpt.commands.console import command, use_cpu_threads
from minigpt.commands.prompts import encode_prompt, read_prompt, unescape
from minigpt.core.checkpoint import model_from_checkpoint, open_checkpoint
from minigpt.core.sampling import check_sampling_args, generate_tokens


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """The text up to the first stop string, and whether one was found."""
    cuts = [text.find(s) for s in stops if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def sample(cfg: DictConfig, out=None) -> list[str]:
    """Generates cfg.num_samples continuations of the prompt; returns them (prompt
    included), streaming the text to `out` (default: the standard output of the moment)
    when there is one sample."""
    out = sys.stdout if out is None else out
    temperature = 0.0 if cfg.greedy else cfg.temperature
    check_sampling_args(temperature, cfg.top_k, cfg.top_p)
    temperature = float(temperature)
    if cfg.max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens={cfg.max_new_tokens} must be a positive integer")
    if cfg.num_samples <= 0:
        raise ValueError(f"num_samples={cfg.num_samples} must be a positive integer")
    stops = list(cfg.stop) if isinstance(cfg.stop, ListConfig | list) else [cfg.stop]
    stops = [s for s in stops if s is not None]
    if not all(isinstance(s, str) for s in stops):
        raise ValueError(f"stop={cfg.stop!r} must be a text or a list of texts, e.g. stop='\\n\\n'")
    stops = [unescape(s) for s in stops]
    device = cfg.device
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", device):
        raise ValueError(f"device={device!r} must be auto, cpu, cuda, cuda:<index> or mps")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device} but this machine has no CUDA GPU: use device=cpu")
    use_cpu_threads(cfg.threads, on_cpu=str(device).startswith("cpu"))
    path, checkpoint = open_checkpoint(cfg.ckpt_path, cfg.runs_dir)
    model, tokenizer = model_from_checkpoint(checkpoint, path, device)
    del checkpoint

    prompt = read_prompt(cfg)
    ids = encode_prompt(prompt, tokenizer, model.config.block_size)
    first_temperature = None
    if temperature == 0 and not prompt.strip():
        # a context of line breaks tells the model nothing: the most likely next token is
        # a line break, and greedy decoding would repeat it to the end
        first_temperature = float(cfg.temperature) if cfg.temperature > 0 else 1.0
        print(
            f"greedy: the prompt holds no text, so the first token is drawn (temperature "
            f"{first_temperature}, seed {cfg.seed}); every later one is the most likely",
            file=sys.stderr,
        )
    context = torch.tensor([ids] * cfg.num_samples, device=device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    stream = cfg.num_samples == 1
    hold = max((len(s) for s in stops), default=1) - 1  # a stop string may still be forming
    new_ids = [[] for _ in range(cfg.num_samples)]
    texts, done, printed = [""] * cfg.num_samples, [False] * cfg.num_samples, 0
    if stream:
        out.write(prompt)
    start = time.perf_counter()
    steps = generate_tokens(
        model,
        context,
        cfg.max_new_tokens,
        temperature=temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        generator=generator,
        use_kv_cache=cfg.use_kv_cache,
        first_temperature=first_temperature,
    )
    count = 0
    for token in steps:
        count += 1
        for i, t in enumerate(token[:, 0].tolist()):
            if not done[i]:
                new_ids[i].append(t)
                texts[i], done[i] = cut_at_stop(tokenizer.decode(new_ids[i]), stops)
        if stream:
            ready = len(texts[0]) if done[0] else max(printed, len(texts[0]) - hold)
            while ready > printed and not done[0] and texts[0][ready - 1] == "\ufffd":
                ready -= 1  # a character whose bytes are still arriving (BPE)
            out.write(texts[0][printed:ready])
            out.flush()
            printed = ready
        if all(done):
            break
    elapsed = time.perf_counter() - start
    if stream:
        out.write(texts[0][printed:] + "\n")
    print(
        f"{count * cfg.num_samples} tokens in {elapsed:.2f} s: "
        f"{count * cfg.num_samples / elapsed:.1f} tokens/s "
        f"({'KV cache' if cfg.use_kv_cache else 'no cache'}, {device})",
        file=sys.stderr,
    )
    return [prompt + text for text in texts]


@command("sample")
def main(cfg: DictConfig) -> None:
    texts = sample(cfg)
    if cfg.num_samples > 1:
        for i, text in enumerate(texts):
            print(f"--- sample {i + 1} ---\n{text}")


if __name__ == "__main__":
    run_command(main)
