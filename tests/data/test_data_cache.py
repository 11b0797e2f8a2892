"""`gpt2kit prepare`: the cache, crash safety, bad input messages and the data report."""

from __future__ import annotations

import gzip
import json
import os

import pytest

import gpt2kit.data.encode as encode_mod
from conftest import run_cli
from gpt2kit.cli import main
from gpt2kit.config import build_config
from gpt2kit.data import (
    PrepareConfig,
    is_prepared_dir,
    iter_documents,
    load_prepared,
    prepare,
    run_prepare,
)
from gpt2kit.errors import UserError
from gpt2kit.tokenizer import gpt2_tokenizer

TOK = gpt2_tokenizer()


def config(tmp_path, *sources, out="data", **options) -> PrepareConfig:
    """A PrepareConfig from flat option names, as the CLI and YAML files give them."""
    values = {"sources": [str(s) for s in sources], "out": str(tmp_path / out), **options}
    return build_config(PrepareConfig, values)


def corpus(tmp_path, n=30):
    folder = tmp_path / "corpus"
    folder.mkdir(exist_ok=True)
    for i in range(n):
        (folder / f"{i:03d}.txt").write_text(f"Document {i}. " + "Some words here. " * (i % 5))
    return folder


# ----------------------------------------------------------------------------- cache


def test_same_sources_and_options_reuse_the_data_dir(tmp_path):
    folder = corpus(tmp_path)
    first = prepare(config(tmp_path, folder), progress=False)
    assert not first.reused
    stamp = (first.path / "train.bin").stat().st_mtime_ns
    again = prepare(config(tmp_path, folder), progress=False)
    assert again.reused and again.meta == first.meta
    assert (first.path / "train.bin").stat().st_mtime_ns == stamp
    # --block-size/--batch-size only change the warnings, recomputed for the run at hand
    small = prepare(config(tmp_path, folder, block_size=8, batch_size=4), progress=False)
    assert small.reused and small.report["warnings"] == []
    big = prepare(config(tmp_path, folder, block_size=4096), progress=False)
    assert big.reused and any("fewer than one block of 4,096" in w for w in big.report["warnings"])
    assert json.loads((first.path / "report.json").read_text()) == big.report
    forced = prepare(config(tmp_path, folder, force=True), progress=False)
    assert not forced.reused and forced.meta["created"] >= first.meta["created"]


@pytest.mark.parametrize(
    "change",
    ["same size and mtime", "new file", "seed", "val_fraction", "tokenizer", "encoding", "split"],
)
def test_any_change_of_content_or_options_prepares_again(tmp_path, change):
    folder = corpus(tmp_path)
    before = prepare(config(tmp_path, folder), progress=False)
    options: dict = {}
    if change == "same size and mtime":
        path = folder / "007.txt"
        stat = path.stat()
        text = path.read_text()
        path.write_text(text.replace("Document", "Dokument"))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    elif change == "new file":
        (folder / "zzz.txt").write_text("One more document.")
    elif change == "seed":
        options = {"seed": 7}
    elif change == "val_fraction":
        options = {"val_fraction": 0.2}
    elif change == "tokenizer":
        options = {"tokenizer": "bpe:300"}
    elif change == "encoding":
        options = {"encoding": "latin-1"}
    else:
        options = {"split_on_blank_lines": True}
    after = prepare(config(tmp_path, folder, **options), progress=False)
    assert not after.reused and after.meta["cache_key"] != before.meta["cache_key"]
    if change == "same size and mtime":
        assert "Dokument" in TOK.decode(after.train.tolist() + after.val.tolist())


def test_an_interrupted_prepare_leaves_no_valid_data_dir(tmp_path, monkeypatch):
    folder = corpus(tmp_path)
    monkeypatch.setattr(encode_mod, "BATCH_CHARS", 50)
    real, calls = encode_mod._encode_batch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(encode_mod, "_encode_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(config(tmp_path, folder), progress=False)
    assert not (tmp_path / "data").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # An up-to-date DATA_DIR survives an interrupted re-preparation unchanged.
    monkeypatch.setattr(encode_mod, "_encode_batch", real)
    good = prepare(config(tmp_path, folder, seed=1), progress=False)
    calls.clear()
    monkeypatch.setattr(encode_mod, "_encode_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(config(tmp_path, folder, seed=2), progress=False)
    assert is_prepared_dir(good.path) and load_prepared(good.path).meta == good.meta


def test_a_damaged_data_dir_is_not_valid_and_is_prepared_again(tmp_path):
    folder = corpus(tmp_path)
    data = prepare(config(tmp_path, folder), progress=False)
    assert is_prepared_dir(data.path) and not is_prepared_dir(folder)
    with open(data.path / "train.bin", "r+b") as f:
        f.truncate(10)
    assert not is_prepared_dir(data.path)
    with pytest.raises(UserError, match=r"train\.bin is missing or not of the size"):
        load_prepared(data.path)
    again = prepare(config(tmp_path, folder), progress=False)
    assert not again.reused and is_prepared_dir(again.path)
    (again.path / "meta.json").unlink()
    assert not is_prepared_dir(again.path)


def test_an_out_folder_holding_other_files_is_never_replaced(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="exists and is not a prepared data folder"):
        prepare(config(tmp_path, corpus(tmp_path), out="mine"), progress=False)
    assert (out / "precious.txt").read_text() == "keep me"


# ----------------------------------------------------------------------------- bad input


def _bad_inputs(tmp_path):
    """(arguments, expected message) for each kind of bad input."""
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("  \n\t\n")
    (tmp_path / "cols.csv").write_text("id,body\n1,hello\n")
    (tmp_path / "bad.json").write_text('[\n  {"text": "ok"},\n  {"text": "oops",}\n]\n')
    (tmp_path / "list.json").write_text('{"text": "an object, not a list"}')
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": nope}\n')
    (tmp_path / "nofield.jsonl").write_text('{"body": "hello"}\n')
    (tmp_path / "tab.jsonl").write_text('{"text": "a\tb"}\n')  # a raw tab inside a string
    (tmp_path / "binary.txt").write_bytes(b"abc\x00\x01\x02def")
    (tmp_path / "latin.txt").write_bytes("naïve café".encode("latin-1"))
    (tmp_path / "notepad.txt").write_text("naïve café\n", encoding="utf-16")  # with its BOM
    (tmp_path / "fake.txt.gz").write_bytes(b"not gzip at all")
    (tmp_path / "ok.txt").write_text("Fine text.")
    return [
        (["{t}/nope.txt"], "nope.txt: no such file or folder"),
        (["{t}/*.nothing"], "no file matches this pattern"),
        (["{t}/pictures"], "the folder {t}/pictures has no text files (1 binary file(s) skipped)"),
        (["{t}/empty.txt"], "empty.txt is empty"),
        (["{t}/blank.txt"], "blank.txt contains only whitespace"),
        (["{t}/cols.csv"], "cols.csv has no column 'text'; its columns are: 'id', 'body'"),
        (["{t}/bad.json"], "bad.json line 3: invalid JSON"),
        (["{t}/list.json"], "list.json line 1: expected a JSON list of records"),
        (["{t}/bad.jsonl"], "bad.jsonl line 2: invalid JSON"),
        (["{t}/tab.jsonl"], "line 1: invalid JSON (Invalid control character at column 12)"),
        (["{t}/nofield.jsonl"], "no field 'text' (its fields: 'body'); pass --text-field NAME"),
        (["{t}/binary.txt"], "binary.txt looks like a binary file (a NUL byte at byte offset 3)"),
        (
            ["{t}/latin.txt"],
            "latin.txt is not valid utf-8 text: 0xef at byte offset 2 cannot be decoded",
        ),
        (["{t}/notepad.txt"], "notepad.txt is UTF-16 text (it starts with a UTF-16 byte-order"),
        (["{t}/notepad.txt"], "mark), not utf-8: pass --encoding utf-16"),
        (["{t}/fake.txt.gz"], "fake.txt.gz is not a valid gzip file"),
        (["{t}/ok.txt", "--val-fraction", "2", "--tokenizer", "bpe:12"], "bpe:VOCAB_SIZE"),
        (["{t}/ok.txt", "--val-fraction", "2"], "--val-fraction must be between 0 and 1"),
        (["{t}/ok.txt", "--tokenizer", "nope.json"], "Tokenizer 'nope.json' not found"),
        (["{t}/ok.txt", "--separator", "x", "--split-on-blank-lines"], "either --separator or"),
        (["{t}/ok.txt", "--encoding", "klingon"], "--encoding 'klingon' is not a known"),
    ]


def test_each_bad_input_exits_2_with_its_message_and_writes_nothing(tmp_path, capsys):
    for args, message in _bad_inputs(tmp_path):
        argv = [a.format(t=tmp_path) for a in args]
        code = main(["prepare", *argv, "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert message.format(t=tmp_path) in err, (args, err)
        assert "Traceback" not in err
        assert not (tmp_path / "out").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_every_problem_is_reported_at_once(tmp_path):
    _bad_inputs(tmp_path)
    sources = ["nope.txt", "cols.csv", "bad.jsonl", "ok.txt"]
    with pytest.raises(UserError) as e:
        prepare(config(tmp_path, *[tmp_path / s for s in sources]), progress=False)
    assert "nope.txt: no such file" in str(e.value)  # found while resolving the sources
    with pytest.raises(UserError) as e:
        prepare(config(tmp_path, *[tmp_path / s for s in sources[1:]]), progress=False)
    assert "has no column 'text'" in str(e.value) and "line 2: invalid JSON" in str(e.value)
    with pytest.raises(UserError) as e:
        PrepareConfig(sources=[], out=None, val_fraction=0, block_size=0, tokenizer="bpe:x")
    for flag in ("SOURCE", "--out", "--val-fraction", "--block-size", "bpe:VOCAB_SIZE"):
        assert flag in str(e.value)


def test_a_real_cli_error_has_no_traceback(tmp_path):
    result = run_cli("prepare", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "no such file or folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_text_in_another_encoding_can_go_on(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("naïve café".encode("latin-1"))
    latin = prepare(config(tmp_path, path, out="a", encoding="latin-1"), progress=False)
    both = TOK.decode([*latin.train[:-1].tolist(), *latin.val[:-1].tolist()])
    assert both == "naïve café"
    docs = list(iter_documents([str(path)], config(tmp_path, path, errors="replace").reading))
    assert docs == ["na\ufffdve caf\ufffd"]
    assert list(
        iter_documents([str(path)], config(tmp_path, path, encoding="latin-1").reading)
    ) == ["naïve café"]
    cut = latin.meta["train_chars"]
    assert latin.train.tolist() == [*TOK.encode("naïve café"[:cut]), TOK.eos_id]


def test_empty_files_inside_a_folder_are_skipped_with_a_warning(tmp_path):
    folder = corpus(tmp_path, n=4)
    (folder / "empty.txt").write_text("")
    data = prepare(config(tmp_path, folder), progress=False)
    assert data.meta["train_documents"] + data.meta["val_documents"] == 4
    assert any("skipped" in w and "empty.txt" in w for w in data.report["warnings"])


# ----------------------------------------------------------------------------- report


def test_report_counts_documents_duplicates_and_warns(tmp_path, capsys):
    train = tmp_path / "train.jsonl"
    docs = ["alpha beta", "gamma delta epsilon", "alpha beta", "a much longer document " * 9]
    train.write_text("".join(json.dumps({"text": d}) + "\n" for d in [*docs, ""]))
    val = tmp_path / "val.jsonl.gz"
    val.write_bytes(gzip.compress(b'{"text": "gamma delta epsilon"}\n{"text": "zeta"}\n'))
    data = run_prepare(config(tmp_path, train, val=[str(val)], block_size=8, batch_size=64))
    report = data.report
    assert json.loads((data.path / "report.json").read_text()) == report
    assert report["documents"] == 6 and report["train"]["documents"] == 4
    assert report["duplicate_documents"] == 2 and report["train_val_shared_documents"] == 1
    assert report["characters"] == sum(map(len, docs)) + len("gamma delta epsilon") + 4
    text_tokens = report["tokens"] - report["documents"]
    assert report["characters_per_token"] == round(report["characters"] / text_tokens, 3)
    assert report["longest_document"]["where"] == f"{train}, record 4"
    assert report["shortest_document"]["where"] == f"{val}, record 2"
    assert report["sources"][0]["field"] == "text" and report["sources"][0]["skipped_records"] == 1
    warnings = "\n".join(report["warnings"])
    assert "train and val share 1 identical document(s)" in warnings
    assert "smaller than one batch of 64 x 8" in warnings
    assert "2 of 6 documents (33%) are exact duplicates" in warnings
    out = capsys.readouterr().out
    assert "Prepared" in out and "chars/token" in out and "warning: train and val share" in out


def test_cli_prepare_then_reuse(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("A few sentences. Not many. Still, it prepares.\nAnother line here.\n")
    args = ["prepare", str(path), "--out", str(tmp_path / "d"), "--block-size", "16"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "Prepared" in first.stdout and "fewer than one block of 16" in first.stdout
    second = run_cli(*args)
    assert second.returncode == 0 and "is up to date" in second.stdout


def test_the_default_block_of_the_warnings_is_gpt2s_context():
    from gpt2kit.data.report import GPT2_CONTEXT
    from gpt2kit.model import GPT2Config

    assert GPT2Config.n_positions == GPT2_CONTEXT
