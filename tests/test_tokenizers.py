import json

import pytest

from minigpt.commands.prompts import trailing_space_warning
from minigpt.core.tokenizers import BPETokenizer, CharTokenizer, load_tokenizer, tokenizer_from_dict


def test_round_trip_and_sorted_vocabulary():
    text = "To be, or not to be: that is the question.\n"
    tok = CharTokenizer.from_text(text)
    assert tok.chars == sorted(set(text))
    assert tok.vocab_size == len(set(text))
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert ids[0] == tok.chars.index("T")


def test_unknown_characters_are_named():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"outside the vocabulary: 'z', 'é'"):
        tok.encode("abzé")


def test_save_and_load(tmp_path):
    tok = CharTokenizer.from_text("héllo wörld\n")
    tok.save(tmp_path / "tok.json")
    loaded = load_tokenizer(tmp_path / "tok.json")
    assert loaded.chars == tok.chars
    assert json.loads((tmp_path / "tok.json").read_text())["kind"] == "char"
    assert tokenizer_from_dict(tok.to_dict()).encode("wörld") == tok.encode("wörld")


def test_foreign_files_are_rejected(tmp_path):
    (tmp_path / "bad.json").write_text('{"kind": "sentencepiece"}')
    with pytest.raises(ValueError, match="unknown tokenizer kind 'sentencepiece'"):
        load_tokenizer(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_text("not json")
    with pytest.raises(ValueError, match="is not a tokenizer file"):
        load_tokenizer(tmp_path / "junk.json")


def test_a_prompt_ending_in_a_space_is_warned_about_for_subword_models():
    """GPT-2's split makes a space at the end of a text a token of its own, while inside the
    training text a space begins the next word's token: a whitespace token that ends in a
    space is always followed by one that starts with whitespace ("\\n   " then " return"), so a
    model continues `def ` with ` name`, a doubled space. sample.py says so; a character
    model has no such boundary."""
    code = "def f(x):\n    return x\n\n\ndef g(y):\n        if y:\n            return y\n" * 20
    bpe = BPETokenizer.train(code, vocab_size=300)
    ids = bpe.encode(code)
    pairs = zip(ids[:-1], ids[1:], strict=True)
    ends_in_space = [bpe.decode([a]).isspace() and bpe.decode([a]).endswith(" ") for a in ids]
    after_spaces = [
        bpe.decode([b]) for (a, b), end in zip(pairs, ends_in_space, strict=False) if end
    ]
    assert after_spaces and all(t[0].isspace() for t in after_spaces)
    assert [bpe.decode([i]) for i in bpe.encode("def ")][-1] == " "
    warning = trailing_space_warning("def ", bpe.encode("def "), bpe)
    assert "ends in ' ', a token of its own" in warning and "prompt='def'" in warning
    assert trailing_space_warning("def", bpe.encode("def"), bpe) is None
    assert trailing_space_warning("def f\n", bpe.encode("def f\n"), bpe) is None
    chars = CharTokenizer.from_text(code)
    assert trailing_space_warning("def ", chars.encode("def "), chars) is None
