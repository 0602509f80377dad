import json

import pytest

from minigpt.core.tokenizers import CharTokenizer, load_tokenizer, tokenizer_from_dict


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
