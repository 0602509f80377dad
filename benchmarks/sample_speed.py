"""Sampling speed on CPU: minigpt's generation with and without the KV cache, against
nanoGPT's, on one model of nanoGPT's shakespeare_char shape (6 layers, 6 heads, 384 wide,
block 256, 65 characters, no biases, learned positions) with the same random weights.

    python benchmarks/sample_speed.py --nanogpt path/to/nanoGPT [--tokens 1000] [--repeats 3]

Two measurements, medians over the repeats:
- in process: new tokens per second of `minigpt.core.sampling.generate` (cache on, cache off)
  and of nanoGPT's `GPT.generate` (imported from the checkout), from a one-token prompt;
- whole process: `python sample.py` against nanoGPT's `python sample.py`, each loading a
  checkpoint of the same weights and writing the same number of tokens.
Sampling: temperature 0.8, top_k 200 (nanoGPT's sample.py defaults) in both. nanoGPT's
sample.py gets a meta.pkl with the character vocabulary, and a stand-in for tiktoken (which
it imports but then does not use).
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minigpt.core.model import GPT, GPTConfig  # noqa: E402
from minigpt.core.sampling import generate  # noqa: E402
from minigpt.core.tokenizers import CharTokenizer  # noqa: E402
from minigpt.tools.convert import to_nanogpt  # noqa: E402

CHARS = list("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")  # 65
SHAPE = dict(n_layer=6, n_head=6, n_embd=384, block_size=256, bias=False, vocab_size=65)


def minigpt_model() -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(**SHAPE, dropout=0.0, pos_encoding="learned", activation="gelu")
    return GPT(config).eval()


def time_generation(fn, tokens: int) -> float:
    start = time.perf_counter()
    fn()
    return tokens / (time.perf_counter() - start)


def in_process(nanogpt: Path, model: GPT, tokens: int) -> dict:
    sys.path.insert(0, str(nanogpt))
    import model as nanogpt_model  # nanoGPT's model.py

    theirs = nanogpt_model.GPT(nanogpt_model.GPTConfig(**SHAPE, dropout=0.0)).eval()
    theirs.load_state_dict(
        to_nanogpt(model.state_dict()), strict=False
    )  # its attn.bias mask is a buffer
    prompt = torch.zeros((1, 1), dtype=torch.long)
    kw = dict(temperature=0.8, top_k=200)
    with torch.no_grad():
        return {
            "minigpt_cache": time_generation(lambda: generate(model, prompt, tokens, **kw), tokens),
            "minigpt_no_cache": time_generation(
                lambda: generate(model, prompt, tokens, use_kv_cache=False, **kw), tokens
            ),
            "nanogpt": time_generation(lambda: theirs.generate(prompt, tokens, **kw), tokens),
        }


def nanogpt_sample_dir(nanogpt: Path, work: Path, checkpoint: dict) -> None:
    """nanoGPT's sample.py set up in work/ on `checkpoint` (out/ckpt.pt), with the 65
    characters' vocabulary (data/bench/meta.pkl)."""
    for name in ("sample.py", "model.py", "configurator.py"):
        (work / name).write_bytes((nanogpt / name).read_bytes())
    # nanoGPT's sample.py imports tiktoken, which it uses only without a meta.pkl (there is
    # one here): a stand-in module keeps the run offline and free of that package
    (work / "tiktoken.py").write_text(
        "def get_encoding(name):\n    raise RuntimeError('tiktoken is not used here')\n"
    )
    (work / "out").mkdir()
    torch.save(checkpoint | {"config": {"dataset": "bench"}}, work / "out" / "ckpt.pt")
    (work / "data" / "bench").mkdir(parents=True)
    meta = {
        "vocab_size": 65,
        "itos": dict(enumerate(CHARS)),
        "stoi": {c: i for i, c in enumerate(CHARS)},
    }
    (work / "data" / "bench" / "meta.pkl").write_bytes(pickle.dumps(meta))


def whole_process(nanogpt: Path, model: GPT, tokens: int, work: Path) -> dict:
    """Wall time of each program's sample.py for `tokens` new tokens, as tokens/s."""
    checkpoint = {"model": to_nanogpt(model.state_dict()), "model_args": SHAPE | {"dropout": 0.0}}
    nanogpt_sample_dir(nanogpt, work, checkpoint)
    nano_args = [
        "--out_dir=out",
        "--device=cpu",
        "--compile=False",
        "--num_samples=1",
        f"--max_new_tokens={tokens}",
        "--start=ROMEO:",
    ]
    ours = work / "minigpt.ckpt"
    hparams = {"model": model.config.to_dict(), "tokenizer": CharTokenizer(CHARS).to_dict()}
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": hparams}, ours)
    our_args = [f"ckpt_path={ours}", "prompt=ROMEO:", f"max_new_tokens={tokens}", "top_k=200"]
    results = {}
    for name, command, cwd in (
        ("nanogpt", [sys.executable, "sample.py", *nano_args], work),
        ("minigpt", [sys.executable, str(ROOT / "sample.py"), *our_args], work),
    ):
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{name} sample.py failed:\n{proc.stderr[-2000:]}")
        results[name] = time.perf_counter() - start
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nanogpt", type=Path, required=True, help="a karpathy/nanoGPT checkout")
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not (args.nanogpt / "model.py").is_file() or not (args.nanogpt / "sample.py").is_file():
        sys.exit(f"error: {args.nanogpt} is not a nanoGPT checkout (no model.py/sample.py)")
    nanogpt = args.nanogpt.resolve()
    model = minigpt_model()
    speeds, walls = [], []
    for _ in range(args.repeats):
        speeds.append(in_process(nanogpt, model, args.tokens))
        with tempfile.TemporaryDirectory() as tmp:
            walls.append(whole_process(nanogpt, model, args.tokens, Path(tmp)))
    speed = {k: statistics.median(s[k] for s in speeds) for k in speeds[0]}
    wall = {k: statistics.median(w[k] for w in walls) for k in walls[0]}
    print(f"{args.tokens} new tokens, 6x6x384 block 256, medians of {args.repeats}")
    print("in process, tokens/s:")
    for key, value in speed.items():
        print(f"  {key:18}{value:10.1f}   {value / speed['nanogpt']:6.2f}x nanoGPT")
    print("whole process (sample.py), seconds:")
    for key, value in wall.items():
        print(f"  {key:18}{value:10.2f}")
    print(f"  nanoGPT / minigpt: {wall['nanogpt'] / wall['minigpt']:.2f}x")
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()} {torch.get_num_threads()} threads",
                "torch": torch.__version__,
                "tokens": args.tokens,
                "repeats": args.repeats,
                "tokens_per_s": speed,
                "whole_process_s": wall,
            }
        )
    )


if __name__ == "__main__":
    main()
