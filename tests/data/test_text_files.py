"""Reading a user's messages: header detection, named columns, CSV/TSV/JSONL/Parquet, label names and indices."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sparring.data.text_files import encode_labels, load_text_file
from sparring.errors import DataLoadError, LabelError


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_csv_header_is_not_a_message_and_labels_leave_the_text(tmp_path: Path) -> None:
    p = _write(tmp_path, "m.csv", "message,label\nwin a free prize now,1\nsee you at five,0\ncall me,0\n")
    t = load_text_file(p)
    assert t.header and t.text_column == "message" and t.label_column == "label"
    assert t.texts == ["win a free prize now", "see you at five", "call me"]  # no header, no ",1" in the text
    assert t.encode(n_classes=2).tolist() == [1, 0, 0]


def test_tsv_label_names_first_without_a_header(tmp_path: Path) -> None:
    p = _write(tmp_path, "m.tsv", 'toxic\tyou are an idiot\nok\thello "friend"\nthreat\tI will find you\nok\thi\n')
    t = load_text_file(p)
    assert not t.header and t.labels == ["toxic", "ok", "threat", "ok"]
    assert t.texts[1] == 'hello "friend"'  # quotes are part of a TSV message
    assert t.encode(["ok", "toxic", "threat"]).tolist() == [1, 0, 2, 0]


def test_txt_label_tab_message_lines_read_as_tsv(tmp_path: Path) -> None:
    p = _write(tmp_path, "m.txt", "spam\tFREE entry now\nham\tok see you\nham\tlater\n")
    t = load_text_file(p)
    assert t.texts == ["FREE entry now", "ok see you", "later"] and t.labels == ["spam", "ham", "ham"]


def test_one_message_per_line_has_no_labels(tmp_path: Path) -> None:
    t = load_text_file(_write(tmp_path, "m.txt", "first message\n\nsecond one\n"))
    assert t.texts == ["first message", "second one"] and t.labels is None
    with pytest.raises(LabelError, match="--label-col"):
        t.encode(n_classes=2)


def test_mixed_tab_and_plain_lines_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataLoadError, match="line 2"):
        load_text_file(_write(tmp_path, "m.txt", "spam\tFREE entry\njust a line\n"))


def test_named_columns_among_many(tmp_path: Path) -> None:
    p = _write(tmp_path, "m.csv", "id,body,verdict_name,score\n1,hello there,ok,0.1\n2,you idiot,toxic,0.9\n")
    t = load_text_file(p, text_col="body", label_col="verdict_name")
    assert t.texts == ["hello there", "you idiot"] and t.labels == ["ok", "toxic"]
    with pytest.raises(DataLoadError, match="Did you mean 'body'"):
        load_text_file(p, text_col="bdy", label_col="verdict_name")
    with pytest.raises(DataLoadError, match="--label-col"):
        load_text_file(p, text_col="body")


def test_headerless_numeric_labels_and_unquoted_commas(tmp_path: Path) -> None:
    p = _write(tmp_path, "m.csv", "hello there,0\nwin, win, win now,1\ncall me later,0\n")
    t = load_text_file(p)
    assert not t.header and t.texts[1] == "win, win, win now" and t.labels == ["0", "1", "0"]


def test_ambiguous_first_line_asks_for_header_option(tmp_path: Path) -> None:
    p = _write(tmp_path, "m.csv", "words,kind\nhello there,ok\n")
    with pytest.raises(DataLoadError, match="--header or --no-header"):
        load_text_file(p)
    assert load_text_file(p, header=True).texts == ["hello there"]
    assert load_text_file(p, header=False).texts == ["words", "hello there"]


def test_two_text_like_columns_ask_for_names(tmp_path: Path) -> None:
    p = _write(tmp_path, "m.csv", "a b c,d e f\ng h i,j k l\nm n o,p q r\n")
    with pytest.raises(DataLoadError, match="--text-col and --label-col"):
        load_text_file(p, header=False)


def test_jsonl_and_parquet(tmp_path: Path) -> None:
    rows = [{"text": "hello", "label": "ok", "id": 1}, {"text": "die", "label": "threat", "id": 2}]
    p = _write(tmp_path, "m.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    t = load_text_file(p)
    assert t.texts == ["hello", "die"] and t.labels == ["ok", "threat"]
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"comment_text": ["hello", "die"], "category": ["ok", "threat"]}), tmp_path / "m.parquet")
    t = load_text_file(tmp_path / "m.parquet")
    assert t.texts == ["hello", "die"] and t.labels == ["ok", "threat"] and t.text_column == "comment_text"
    with pytest.raises(DataLoadError, match="not JSON"):
        load_text_file(_write(tmp_path, "bad.jsonl", "{not json}\n"))


def test_label_names_need_the_models_class_names() -> None:
    assert encode_labels(["Toxic", "ok", "2"], ["ok", "toxic", "threat"]).tolist() == [1, 0, 2]
    with pytest.raises(LabelError, match="--classes"):
        encode_labels(["ok", "toxic"], None, 2)
    with pytest.raises(LabelError, match=re.escape("Did you mean 'toxic'")):
        encode_labels(["toxc"], ["ok", "toxic"])
    with pytest.raises(LabelError, match="3 classes"):
        encode_labels(["3"], None, 3)


def test_missing_file_and_empty_rows(tmp_path: Path) -> None:
    with pytest.raises(DataLoadError, match="not found"):
        load_text_file(tmp_path / "none.csv")
    with pytest.raises(LabelError, match="no label"):
        load_text_file(_write(tmp_path, "m.csv", "text,label\nhello,ok\nbye,\n"))
