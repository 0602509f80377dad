"""eval.py: every window of a split scored through Lightning, with figures that a hand
computation reproduces, other text scored in the model's vocabulary, and bad input refused."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import ROOT, compose_into, run
from hydra import compose, initialize_config_dir

from minigpt.commands import eval as eval_script
from minigpt.commands import train as train_script
from minigpt.core.checkpoint import model_from_checkpoint, read_checkpoint
from minigpt.data.corpus import text_file_splits

TEXT = "".join(f"Père Noël {i}: «déjà vu» — 東京, naïve café.\n" for i in range(120))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    """A tiny model trained for 4 steps on a non-ASCII text file; its checkpoint."""
    out = tmp_path_factory.mktemp("eval")
    (out / "book.txt").write_text(TEXT)
    overrides = (
        "experiment=tiny",
        "data=text_files",
        f"data.paths=[{out / 'book.txt'}]",
        "trainer.max_steps=4",
        "logger=none",
        "sample.num_samples=0",
    )
    train_script.train(compose_into(out, cache_dir, *overrides))
    return out / "checkpoints" / "last.ckpt"


def compose_eval(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("eval", overrides=list(overrides))


def test_the_loss_over_every_window_is_the_mean_token_loss(trained, tmp_path):
    figures = eval_script.evaluate(compose_eval(f"ckpt_path={trained}", "split=val"))
    model, tokenizer = model_from_checkpoint(read_checkpoint(trained), trained)
    (val,) = text_file_splits([str(trained.parents[1] / "book.txt")], 0.1)["val"]
    tokens = torch.tensor(tokenizer.encode(val.text))
    block = model.config.block_size
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(tokens) - block, block):  # every non-overlapping window
            inputs, targets = tokens[start : start + block], tokens[start + 1 : start + block + 1]
            logits, _ = model(inputs[None])
            log_probs = torch.log_softmax(logits[0].double(), dim=-1)
            total -= float(log_probs[torch.arange(block), targets].sum())
            count += block
    assert figures["tokens"] == count and figures["windows"] == count // block
    assert figures["loss"] == pytest.approx(total / count, rel=1e-5)
    assert figures["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    # bits per byte, from its definition: the bits of every scored token over the UTF-8
    # bytes of the text those tokens are (eval.py uses the split's bytes per token, the
    # same up to the unscored tail)
    scored = tokens[1 : count + 1]
    scored_bytes = sum(len(tokenizer.decode([int(t)]).encode("utf-8")) for t in scored)
    assert scored_bytes > 1.3 * len(scored)  # non-ASCII: counting characters is 30% off
    assert figures["bpb"] == pytest.approx(total / math.log(2) / scored_bytes, rel=1e-2)
    written = json.loads((trained.parent / "eval_val_last.json").read_text())
    assert written == figures and written["split"] == "val"


def test_a_measurement_never_overwrites_another_and_a_missing_split_names_the_way_out(
    trained, tmp_path, capsys
):
    everything = eval_script.evaluate(compose_eval(f"ckpt_path={trained}", "split=val"))
    bar = capsys.readouterr().out  # tqdm's bar, as training's, named by the split
    assert "val: 100%|" in bar and "Testing" not in bar and "━" not in bar
    figures = eval_script.evaluate(compose_eval(f"ckpt_path={trained}", "split=val", "limit=3"))
    assert figures["windows"] == 3 < everything["windows"]
    assert json.loads((trained.parent / "eval_val_last_limit3.json").read_text()) == figures
    assert json.loads((trained.parent / "eval_val_last.json").read_text()) == everything
    (tmp_path / "other.txt").write_text("Noël: déjà vu, naïve café.\n" * 30)
    other = ("data=text_files", f"data.paths=[{tmp_path}/other.txt]", "split=train")
    eval_script.evaluate(compose_eval(f"ckpt_path={trained}", *other))
    eval_script.evaluate(compose_eval(f"ckpt_path={trained}", *other, "batch_size=2"))
    (written,) = trained.parent.glob("eval_train_last_text_files-*.json")  # the same one
    assert json.loads(written.read_text())["corpus"] == "text_files"
    with pytest.raises(
        ValueError, match=r"has no test split \(it has train and val\): pass split=val"
    ):
        eval_script.evaluate(compose_eval(f"ckpt_path={trained}", "split=test"))


def test_other_text_is_scored_in_the_models_vocabulary(trained, tmp_path):
    """data=... overrides score another file with the checkpoint's tokenizer; a character
    the model never saw is a clear error, not a silent substitution."""
    (tmp_path / "mine.txt").write_text("Noël: déjà vu, naïve café.\n" * 30)
    cfg = compose_eval(
        f"ckpt_path={trained}",
        "split=train",
        "data=text_files",
        f"data.paths=[{tmp_path}/mine.txt]",
    )
    figures = eval_script.evaluate(cfg)
    assert figures["corpus"] == "text_files" and figures["windows"] > 0
    (tmp_path / "snow.txt").write_text("Noël ☃ café\n" * 30)
    cfg = compose_eval(
        f"ckpt_path={trained}", "split=val", "data=text_files", f"data.paths=[{tmp_path}/snow.txt]"
    )
    with pytest.raises(ValueError, match=r"1 character\(s\) the model's vocabulary lacks: '☃'"):
        eval_script.evaluate(cfg)


def test_bad_input_is_one_line_and_a_non_zero_exit(trained, tmp_path):
    result = run("eval.py", f"ckpt_path={trained}", "split=bogus", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().endswith("error: split='bogus' is not one of train, val, test")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        eval_script.evaluate(compose_eval(f"ckpt_path={tmp_path}/missing.ckpt"))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 0}, foreign)
    with pytest.raises(ValueError, match="not written by minigpt's train.py"):
        eval_script.evaluate(compose_eval(f"ckpt_path={foreign}"))
    assert not np.any([p.name.startswith("eval_") for p in tmp_path.iterdir()])
