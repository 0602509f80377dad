"""HellaSwag (eval.py task=hellaswag) on a hand-written file in its format, checked against
log-likelihoods computed through transformers on the exported model; exported models of
both tokenizers scored by lm-evaluation-harness's HFLM as we score them."""

import json

import pytest
import torch
import transformers
from conftest import ROOT, call, compose_into
from hydra import compose, initialize_config_dir

from minigpt.commands import eval as eval_script
from minigpt.commands import train as train_script
from minigpt.core.checkpoint import load_checkpoint
from minigpt.tools.convert import export_hf
from minigpt.tools.hellaswag import ending_log_likelihoods, read_items

# items in the validation file's format (fields as in hellaswag_val.jsonl); endings of
# different lengths, so that total and mean log-likelihood can disagree
ITEMS = [
    {
        "ind": i,
        "activity_label": "Reading",
        "ctx_a": ctx,
        "ctx_b": "",
        "ctx": ctx,
        "split": "val",
        "split_type": "indomain",
        "label": label,
        "endings": endings,
        "source_id": f"test~{i}",
    }
    for i, (ctx, endings, label) in enumerate(
        [
            ("To be, or not to be,", ["that is the question.", "a", "the king is dead", "no"], 0),
            ("My lord, the", ["king", "queen is come to court", "horse", "night is long"], 1),
            ("Enter HAMLET", ["and HORATIO.", "with a book, reading", "alone", "dead"], 2),
            ("O Romeo, Romeo,", ["wherefore art thou Romeo?", "hi", "come", "go away now"], 0),
            ("Now is the winter", ["of our discontent", "summer", "spring and fall", "x"], 0),
            ("All the world's a", ["stage", "play of fools and kings", "dream", "book"], 0),
        ]
    )
]


@pytest.fixture(scope="module")
def hellaswag_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("hellaswag") / "hellaswag_val.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in ITEMS))
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, cache_dir):
    """A BPE and a character-level checkpoint of a few steps each."""
    out = {}
    for kind in ("bpe", "char"):
        run = tmp_path_factory.mktemp(f"run_{kind}")
        options = ["experiment=tiny", "logger=none", "sample.num_samples=0", "trainer.max_steps=4"]
        if kind == "bpe":
            options.append("data=shakespeare_bpe")
        train_script.train(compose_into(run, cache_dir, *options))
        out[kind] = run / "checkpoints" / "last.ckpt"
    return out


def transformers_log_likelihoods(hf_model, tokenizer, item) -> list[float]:
    """Each ending's total log-likelihood given the context, through transformers."""
    context = tokenizer.encode(item.context)
    scores = []
    for ending in item.endings:
        tokens = tokenizer.encode(" " + ending)
        ids = torch.tensor([context + tokens])
        with torch.no_grad():
            log_probs = torch.log_softmax(hf_model(ids).logits[0, :-1].double(), dim=-1)
        rows = range(len(context) - 1, len(context) + len(tokens) - 1)
        scores.append(sum(float(log_probs[r, t]) for r, t in zip(rows, tokens, strict=True)))
    return scores


def test_hellaswag_scores_what_transformers_computes(checkpoints, hellaswag_file, tmp_path):
    """Per-ending log-likelihoods within 1e-4 of transformers' on the exported model; acc
    (total) and acc_norm (mean per token) as transformers' figures give them; the result
    is written beside the checkpoint."""
    checkpoint = checkpoints["bpe"]
    model, tokenizer = load_checkpoint(checkpoint)
    export_hf(model, tokenizer, tmp_path / "hf")
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    items = read_items(hellaswag_file)
    correct = correct_norm = 0
    for item in items:
        ours = ending_log_likelihoods(model, tokenizer, item)
        theirs = transformers_log_likelihoods(hf_model, tokenizer, item)
        assert max(abs(a - b) for (a, _), b in zip(ours, theirs, strict=True)) <= 1e-4
        counts = [len(tokenizer.encode(" " + e)) for e in item.endings]
        means = [t / c for t, c in zip(theirs, counts, strict=True)]
        correct += theirs.index(max(theirs)) == item.label
        correct_norm += means.index(max(means)) == item.label
    argv = [
        "eval.py",
        "task=hellaswag",
        f"ckpt_path={checkpoint}",
        f"hellaswag.file={hellaswag_file}",
    ]
    assert call(eval_script.main, argv) == 0
    figures = json.loads((checkpoint.parent / "hellaswag_last.json").read_text())
    assert figures["items"] == 6 and figures["skipped"] == 0
    assert figures["acc"] == correct / 6 and figures["acc_norm"] == correct_norm / 6


def test_a_character_model_skips_items_it_cannot_spell(checkpoints, tmp_path):
    path = tmp_path / "val.jsonl"
    strange = dict(ITEMS[0], ctx="Zürich: 東京", ctx_a="Zürich: 東京")
    path.write_text("".join(json.dumps(item) + "\n" for item in [strange, *ITEMS[1:]]))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "eval",
            overrides=[
                "task=hellaswag",
                f"ckpt_path={checkpoints['char']}",
                f"hellaswag.file={path}",
                "hellaswag.limit=4",
            ],
        )
    figures = eval_script.evaluate(cfg)
    assert figures["items"] == 3 and figures["skipped"] == 1


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_lm_evaluation_harness_scores_exported_models_as_we_do(
    checkpoints, kind, hellaswag_file, tmp_path
):
    """lm-evaluation-harness's HFLM on an exported model of either tokenizer: the same
    log-likelihoods (a character model's export has a start token, a line break, which the
    harness needs before a context)."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = load_checkpoint(checkpoints[kind])
    export_hf(model, tokenizer, tmp_path / "hf")
    lm = HFLM(pretrained=str(tmp_path / "hf"), backend="causal", batch_size=2, device="cpu")
    items = read_items(hellaswag_file)
    requests = [
        Instance("loglikelihood", doc={}, arguments=(item.context, " " + ending), idx=i)
        for item in items
        for i, ending in enumerate(item.endings)
    ]
    theirs = [logprob for logprob, _ in lm.loglikelihood(requests)]
    ours = [total for item in items for total, _ in ending_log_likelihoods(model, tokenizer, item)]
    assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) <= 1e-4
