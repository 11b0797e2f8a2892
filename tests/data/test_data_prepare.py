"""`gpt2kit prepare`: every source kind gives the ids of encoding its documents + EOS directly.

The reference is always `Tokenizer.encode(document) + [eos]`, documents in source order, so a
reader that drops, merges, re-orders or alters a document, or a tokenizer path that differs
from `tokenizers`, fails here.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import gpt2kit.data.encode as encode_mod
import gpt2kit.data.preparation as preparation
import gpt2kit.data.sources as sources_mod
from conftest import SHAKESPEARE, run_cli
from gpt2kit.config import build_config
from gpt2kit.data import PrepareConfig, format_report, iter_documents, load_prepared, prepare
from gpt2kit.data.encode import HFEncoder, TiktokenEncoder, fast_encoder
from gpt2kit.errors import UserError
from gpt2kit.tokenizer import gpt2_tokenizer, load_tokenizer

TOK = gpt2_tokenizer()

# Documents that stress the readers and the tokenizer: unicode, emoji, CRLF, tabs, runs of
# spaces and newlines, a literal <|endoftext|>, quotes and commas (CSV), braces (JSON).
DOCS = [
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer",
    'She said "hi, there" and left; {"not": "json"}, 3,141.59 apples.',
    "Ünïcödé façade — naïve café 🙂 中文 日本語\r\nline two\twith a tab   and spaces",
    "Code:\n\n    def f(x):\n        return x  # it's\n\n\nThe end.   ",
    "A literal <|endoftext|> inside a document stays the end-of-text id.",
    "x",
]


def ids_of(docs: list[str], tok=TOK) -> list[int]:
    out: list[int] = []
    for d in docs:
        out += [*tok.encode(d), tok.eos_id]
    return out


def run(tmp_path, sources, out="data", **options):
    """Prepare `sources` with a one-document --val file, so train.bin holds every source doc."""
    val = tmp_path / "heldout.txt"
    val.write_text("A held-out validation document.")
    values = {"sources": [str(s) for s in sources], "out": str(tmp_path / out), "val": [str(val)]}
    return prepare(build_config(PrepareConfig, {**values, **options}), progress=False)


def check_train(data, docs, tok=TOK):
    assert data.train.tolist() == ids_of(docs, tok)
    assert data.val.tolist() == ids_of(["A held-out validation document."], tok)
    starts = np.cumsum([0] + [len(tok.encode(d)) + 1 for d in docs[:-1]])
    assert data.train_docs.tolist() == starts.tolist()
    assert data.meta["train_documents"] == len(docs)
    assert data.meta["train_chars"] == sum(len(d) for d in docs)
    assert data.meta["train_tokens"] == len(data.train)


# ----------------------------------------------------------------------------- writers


def write_text(folder, docs, suffix=".txt"):
    paths = []
    for i, d in enumerate(docs):
        p = folder / f"doc{i}{suffix}"
        p.write_bytes(d.encode("utf-8"))
        paths.append(p)
    return paths


def write_csv(path, docs, delimiter=",", column="body", opener=open):
    with opener(path, "wt", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(["id", column, "label"])
        for i, d in enumerate(docs):
            w.writerow([i, d, "x,y"])
    return path


def write_jsonl(path, docs, field="text", opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"id": i, field: d}) + "\n")
    return path


@pytest.mark.parametrize(
    "kind", ["txt", "md", "txt.gz", "folder", "glob", "csv", "csv.gz", "tsv", "json", "jsonl"]
)
def test_each_source_kind_gives_the_ids_of_its_documents(tmp_path, kind):
    src = tmp_path / "src"
    src.mkdir()
    options = {}
    if kind in ("txt", "md"):
        sources = [write_text(src, DOCS[2:3], "." + kind)[0]]
        docs = DOCS[2:3]
    elif kind == "txt.gz":
        sources = [src / "a.txt.gz"]
        sources[0].write_bytes(gzip.compress(DOCS[3].encode()))
        docs = DOCS[3:4]
    elif kind in ("folder", "glob"):
        (src / "b" / "deeper").mkdir(parents=True)
        (src / "b" / "deeper" / "z.md").write_text(DOCS[0], encoding="utf-8")
        (src / "b" / "y.txt").write_text(DOCS[1], encoding="utf-8")
        (src / "a.txt").write_text(DOCS[2], encoding="utf-8")
        (src / "NOTES").write_text(DOCS[3], encoding="utf-8")  # no extension, but text
        (src / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")  # skipped
        (src / ".hidden.txt").write_text("hidden files are skipped")
        # sorted by path: NOTES, a.txt, b/deeper/z.md, b/y.txt
        docs = [DOCS[3], DOCS[2], DOCS[0], DOCS[1]]
        sources = [src] if kind == "folder" else [str(src) + "/**/*"]
    elif kind in ("csv", "csv.gz", "tsv"):
        opener = gzip.open if kind.endswith(".gz") else open
        path = src / f"data.{kind}"
        sources = [write_csv(path, DOCS, "\t" if kind == "tsv" else ",", opener=opener)]
        docs, options = DOCS, {"text_column": "body"}
    elif kind == "json":
        path = src / "data.json"
        path.write_text(json.dumps([{"text": d, "n": i} for i, d in enumerate(DOCS)], indent=2))
        sources, docs = [path], DOCS
    else:
        sources, docs = [write_jsonl(src / "data.jsonl", DOCS)], DOCS
    data = run(tmp_path, sources, **options)
    check_train(data, docs)
    assert data.train.dtype == np.uint16 and not data.train.flags.writeable
    # iter_documents (used by evaluation) reads the same documents
    assert list(iter_documents([str(s) for s in sources], data_config(options).reading)) == docs


def data_config(options):
    """A PrepareConfig from flat option names, as the CLI and YAML files give them."""
    return build_config(PrepareConfig, {"sources": ["unused"], "out": "unused", **options})


def test_gzipped_jsonl_and_mixed_sources_in_one_call(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text(DOCS[0], encoding="utf-8")
    b = write_jsonl(tmp_path / "b.jsonl.gz", DOCS[1:3], field="content", opener=gzip.open)
    c = write_csv(tmp_path / "c.csv", DOCS[3:5], column="text")
    data = run(tmp_path, [a, b, c], text_field="content")
    check_train(data, DOCS[:5])
    kinds = [(s["kind"], s.get("field") or s.get("column")) for s in data.report["sources"]]
    assert kinds[:3] == [("text", None), ("jsonl", "content"), ("csv", "text")]


def test_a_nested_json_field_is_named_with_dots(tmp_path):
    path = tmp_path / "nested.jsonl"
    rows = [{"id": i, "data": {"text": d, "lang": "en"}} for i, d in enumerate(DOCS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    check_train(run(tmp_path, [path], text_field="data.text"), DOCS)
    path.write_text(json.dumps({"data": {"body": "x"}}) + "\n")
    with pytest.raises(UserError, match=r"has no field 'data\.text' \(its fields: 'data'\)"):
        run(tmp_path, [path], text_field="data.text")


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    docs = [*DOCS, None, "   "]  # null and blank rows are skipped and counted
    table = pa.table({"n": list(range(len(docs))), "text": docs})
    pq.write_table(table, tmp_path / "data.parquet", row_group_size=3)
    data = run(tmp_path, [tmp_path / "data.parquet"])
    check_train(data, DOCS)
    assert data.report["sources"][0]["skipped_records"] == 2
    assert any("skipped 2 row(s)" in w for w in data.report["warnings"])


def test_hf_dataset_from_a_local_folder(tmp_path):
    pytest.importorskip("datasets")
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", DOCS)
    data = run(tmp_path, [f"hf:{folder}"])
    check_train(data, DOCS)
    assert data.report["sources"][0]["source"] == f"hf:{folder}@train"


def test_hf_dataset_name_config_and_split_are_passed_to_load_dataset(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(name, config=None, split=None, streaming=False):
        calls.append((name, config, split, streaming))
        return iter([{"text": d, "id": i} for i, d in enumerate(DOCS)])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = run(tmp_path, ["hf:someone/corpus:clean@validation"])
    check_train(data, DOCS)
    assert calls[0] == ("someone/corpus", "clean", "validation", True)
    with pytest.raises(UserError, match=r"no column 'body'; its columns are: 'text', 'id'"):
        run(tmp_path, ["hf:someone/corpus"], out="other", text_column="body")


def test_hf_without_datasets_names_the_packages_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(UserError, match=r"pip install datasets pyarrow"):
        run(tmp_path, ["hf:wikitext:wikitext-2-raw-v1"])
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("mode", ["blank_lines", "separator"])
def test_splitting_a_file_into_documents(tmp_path, monkeypatch, mode):
    # Tiny read blocks so separators, CRLFs and multi-byte characters straddle block edges.
    monkeypatch.setattr(sources_mod, "BLOCK_BYTES", 5)
    parts = ["  First doc, 🙂 line one\nline two  ", "Second\r\n  indented", "Third ünï"]
    if mode == "blank_lines":
        text = "\n\n" + parts[0] + "\n\n \t\n\n" + parts[1] + "\r\n\r\n" + parts[2] + "\n \n"
        options = {"split_on_blank_lines": True}
    else:
        text = "<|endoftext|>".join(["\n", parts[0], parts[1], "  \n ", parts[2]])
        options = {"separator": "<|endoftext|>"}
    path = tmp_path / "corpus.txt"
    path.write_bytes(text.encode("utf-8"))
    docs = [p.strip() for p in parts]
    data = run(tmp_path, [path], **options)
    check_train(data, docs)


def test_whole_file_streamed_in_tiny_blocks_and_pieces_keeps_every_id(tmp_path, monkeypatch):
    monkeypatch.setattr(sources_mod, "BLOCK_BYTES", 7)
    monkeypatch.setattr(sources_mod, "PIECE_CHARS", 50)
    monkeypatch.setattr(encode_mod, "BATCH_CHARS", 120)
    text = "\ufeff" + "\n".join(DOCS) * 5  # a UTF-8 BOM is dropped
    path = tmp_path / "big.txt"
    path.write_bytes(text.encode("utf-8"))
    record = tmp_path / "records.jsonl"
    write_jsonl(record, [DOCS[0] * 20, DOCS[2] * 20])
    data = run(tmp_path, [path, record])
    check_train(data, [text[1:], DOCS[0] * 20, DOCS[2] * 20])


def test_tiktoken_fast_path_gives_the_tokenizers_ids(tmp_path, monkeypatch):
    pytest.importorskip("tiktoken")
    assert isinstance(fast_encoder(TOK), TiktokenEncoder)
    text = SHAKESPEARE.read_text(encoding="utf-8")[:200_000]
    samples = [*DOCS, text, "  \n\n\t x", "<|endoftext|><|endoftext|>", "999999 1,000 ÷ ½"]
    fast = fast_encoder(TOK).encode_many(samples)
    slow = HFEncoder(TOK).encode_many(samples)
    for a, b, s in zip(fast, slow, samples, strict=True):
        assert a.tolist() == b.tolist() == TOK.encode(s)
    # and a whole prepare through `tokenizers` writes the same bytes
    source = tmp_path / "s.txt"
    source.write_text(text, encoding="utf-8")
    with_tiktoken = run(tmp_path, [source], out="a")
    monkeypatch.setattr(preparation, "fast_encoder", lambda tok: HFEncoder(tok))
    without = run(tmp_path, [source], out="b")
    assert (
        with_tiktoken.report["encoder"] == "tiktoken" and without.report["encoder"] == "tokenizers"
    )
    assert np.array_equal(with_tiktoken.train, without.train)


def test_trained_bpe_tokenizer_is_saved_and_used(tmp_path):
    text = SHAKESPEARE.read_text(encoding="utf-8")[:30_000]
    path = tmp_path / "s.txt"
    path.write_text(text, encoding="utf-8")
    data = run(tmp_path, [path], tokenizer="bpe:300")
    assert data.tokenizer.vocab_size <= 300 and data.meta["vocab_size"] == data.tokenizer.vocab_size
    assert data.train.dtype == np.uint16 and data.report["encoder"] == "tokenizers"
    saved = load_tokenizer(data.path / "tokenizer")
    check_train(data, [text], tok=saved)
    assert saved.decode(data.train[:-1].tolist()) == text


def test_a_vocab_over_65536_ids_is_stored_as_uint32(tmp_path):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(70_000)}
    vocab["[UNK]"] = len(vocab)
    backend = HFTokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.add_special_tokens(["<|endoftext|>"])
    backend.save(str(tmp_path / "tokenizer.json"))
    path = tmp_path / "words.txt"
    path.write_text("w69999 w5 w65536 w123 w1\nw66000")
    data = run(tmp_path, [path], tokenizer=str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(tmp_path / "tokenizer.json")
    assert data.train.dtype == np.uint32
    check_train(data, [path.read_text()], tok=tok)
    assert data.train[:3].tolist() == [69999, 5, 65536]


def test_random_split_by_whole_documents_is_seeded(tmp_path):
    docs = [f"Document number {i}: " + "word " * (i % 7) for i in range(200)]
    path = write_jsonl(tmp_path / "docs.jsonl", docs)

    def split(seed, out):
        config = PrepareConfig(sources=[str(path)], out=str(tmp_path / out), seed=seed)
        data = prepare(config, progress=False)
        return (
            data,
            [TOK.decode(d) for d in docs_of(data.train, data.train_docs)],
            [TOK.decode(d) for d in docs_of(data.val, data.val_docs)],
        )

    data, train, val = split(1, "a")
    assert len(val) == 10  # 5% of 200 whole documents
    assert sorted(train + val) == sorted(docs)
    assert [d for d in docs if d in set(val)] == val  # order kept within each split
    assert [d for d in docs if d in set(train)] == train
    assert data.meta["val_chars"] == sum(map(len, val))
    assert split(1, "b")[2] == val and split(2, "c")[2] != val


def docs_of(tokens, starts):
    ends = [*starts.tolist()[1:], len(tokens)]
    out = []
    for s, e in zip(starts.tolist(), ends, strict=True):
        assert tokens[e - 1] == TOK.eos_id
        out.append(tokens[s : e - 1].tolist())
    return out


def test_a_single_document_is_split_by_its_tail(tmp_path):
    data = prepare(
        PrepareConfig(sources=[str(SHAKESPEARE)], out=str(tmp_path / "d"), val_fraction=0.1),
        progress=False,
    )
    text = SHAKESPEARE.read_text(encoding="utf-8")
    cut = data.meta["train_chars"]
    assert data.meta["train_chars"] + data.meta["val_chars"] == len(text)
    assert 0.09 < data.meta["val_chars"] / len(text) < 0.12 and text[cut - 1] == "\n"
    assert data.train.tolist() == ids_of([text[:cut]])
    assert data.val.tolist() == ids_of([text[cut:]])
    assert data.meta["split"]["method"] == "tail"


def test_the_report_names_the_split_the_longest_and_shortest_documents_land_in(tmp_path):
    # 40 documents, split at random: wherever the shortest and longest land, the report says
    # that split (it used to give their source's role: "train" for a held-out document).
    docs = [f"document number {i} " * (2 + i % 7) for i in range(38)] + ["zq", "long " * 60]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    for seed in range(6):
        config = PrepareConfig(
            sources=[str(path)], out=str(tmp_path / f"d{seed}"), val_fraction=0.3, seed=seed
        )
        data = prepare(config, progress=False)
        val = TOK.decode(data.val.tolist())
        for key, text in (("shortest_document", "zq"), ("longest_document", "long " * 60)):
            expected = "val" if text in val else "train"
            assert data.report[key]["split"] == expected, (seed, key)
    one = tmp_path / "one.txt"
    one.write_text("A single document. " * 50)
    data = prepare(PrepareConfig(sources=[str(one)], out=str(tmp_path / "one")), progress=False)
    assert data.report["longest_document"]["split"] == "train and val"


def test_a_tiny_corpus_still_prepares_with_a_warning(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("Hello there. How are you today? I am fine, thank you.")
    config = PrepareConfig(sources=[str(path)], out=str(tmp_path / "d"), block_size=64)
    data = prepare(config, progress=False)
    assert len(data.train) >= 2 and len(data.val) >= 2  # both splits have text + EOS
    text = path.read_text()
    cut = data.meta["train_chars"]
    assert data.train.tolist() + data.val.tolist() == ids_of([text[:cut], text[cut:]])
    assert any("fewer than one block of 64" in w for w in data.report["warnings"])
    assert load_prepared(data.path).meta == data.meta


@pytest.mark.parametrize(
    "raw, offset",
    [(b"abcd\xe2\x82\xacef\xffgh", 9), (b"abc\xe2\x82", 3), (b"\xe2\x82\xac\xe2\x82\xac\xe2x", 6)],
)
def test_decode_errors_give_the_exact_byte_offset_across_read_blocks(
    tmp_path, monkeypatch, raw, offset
):
    monkeypatch.setattr(sources_mod, "BLOCK_BYTES", 3)
    path = tmp_path / "bad.txt"
    path.write_bytes(raw)
    with pytest.raises(UserError, match=f"at byte offset {offset} cannot be decoded"):
        list(iter_documents([str(path)], data_config({}).reading))


# ----------------------------------------------------------------------------- odd input


def _refused(result: subprocess.CompletedProcess, *texts: str) -> None:
    """The command stopped with status 2 and a message holding every text, no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for text in texts:
        assert text in result.stderr, result.stderr


def test_a_device_or_a_pipe_as_source_is_refused_with_the_fix(tmp_path):
    out = str(tmp_path / "out")
    _refused(
        run_cli("prepare", "/dev/null", "--out", out),
        "/dev/null is a character device, not a regular file",
        "save the text to a file and pass that",
    )
    if shutil.which("bash") and hasattr(os, "mkfifo"):
        r = subprocess.run(
            ["bash", "-c", f"'{sys.executable}' -m gpt2kit prepare <(echo hi) --out '{out}'"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        _refused(r, "is a pipe, not a regular file")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_pipes_and_broken_links_in_a_folder_are_skipped_with_a_note(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text(DOCS[0], encoding="utf-8")
    os.mkfifo(folder / "pipe.txt")  # opening it would wait forever for a writer
    (folder / "gone.txt").symlink_to(tmp_path / "missing.txt")
    r = run_cli("prepare", str(folder), "--out", str(tmp_path / "out"), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "skipped 2 entries that are not regular files in the folder" in r.stdout
    assert "gone.txt (a broken link)" in r.stdout and "pipe.txt (a pipe)" in r.stdout
    data = load_prepared(tmp_path / "out")
    assert [(s["source"], s["files"]) for s in data.meta["sources"]] == [(str(folder), 1)]


def test_more_threads_than_cores_are_capped_with_a_warning(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text(DOCS[0], encoding="utf-8")
    r = run_cli("prepare", str(path), "--out", str(tmp_path / "out"), "--num-threads", "100000")
    assert r.returncode == 0, r.stderr
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert (
        f"--num-threads 100,000 is more than the {cores} CPU core(s) this process may use: "
        f"used {cores}" in r.stdout
    )


# ----------------------------------------------------------------------------- memory


def _peak_bytes(fn) -> int:
    """Peak of Python and NumPy allocations (tracemalloc sees both) while `fn()` runs."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_grows_by_a_few_bytes_per_document_only(tmp_path, monkeypatch):
    """Many tiny records: past the bounded buffers (read blocks, batches in flight), each
    document costs its 8-byte hash (and the seeded choice of val documents), and the
    statistics computed from all documents at the end (duplicates, tokens per document) add
    a few bytes per document, not copies of the hashes or of the offsets."""
    monkeypatch.setattr(sources_mod, "BLOCK_BYTES", 4096)  # saturate every bounded buffer
    monkeypatch.setattr(encode_mod, "BATCH_CHARS", 2048)  # at test scale
    extra: dict[str, int] = {}

    def measured(name: str):
        fn = getattr(preparation, name)

        def wrapper(*args):
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            try:
                return fn(*args)
            finally:
                extra[name] = tracemalloc.get_traced_memory()[1] - before

        monkeypatch.setattr(preparation, name, wrapper)

    measured("_duplicates")
    measured("_tokens_per_document")

    def peak(n: int) -> int:
        path = tmp_path / f"{n}.jsonl"
        path.write_text("".join(f'"doc {i}"\n' for i in range(n)))
        config = PrepareConfig(sources=[str(path)], out=str(tmp_path / f"d{n}"), num_threads=1)
        return _peak_bytes(lambda: prepare(config, progress=False))

    peak(1000)  # one-time costs (the tokenizer's caches) out of the comparison
    small = peak(10_000)
    per_document = (peak(60_000) - small) / 50_000
    assert per_document < 24, f"{per_document:.1f} bytes per document"
    for name, size in extra.items():  # measured on the 60,000 documents
        assert size < 4 * 60_000, f"{name} allocated {size / 60_000:.1f} bytes per document"


@pytest.mark.parametrize("split", ["random", "explicit"])
def test_duplicate_and_length_statistics_equal_a_direct_count(tmp_path, monkeypatch, split):
    """The in-place duplicate count and the running document lengths give what counting the
    documents directly gives, with documents cut in pieces across many batches."""
    monkeypatch.setattr(sources_mod, "PIECE_CHARS", 40)
    monkeypatch.setattr(encode_mod, "BATCH_CHARS", 100)
    rng = random.Random(3)
    words = ["alpha", "beta", "gamma", "delta"]
    docs = [" ".join(rng.choices(words, k=rng.choice([1, 2, 30]))) for _ in range(400)]
    path = write_jsonl(tmp_path / "docs.jsonl", docs)
    options = {}
    if split == "explicit":
        options["val"] = [str(write_jsonl(tmp_path / "val.jsonl", docs[:20] + ["zeta"] * 3))]
    config = PrepareConfig(sources=[str(path)], out=str(tmp_path / "d"), **options)
    data = prepare(config, progress=False)
    train = [TOK.decode(d) for d in docs_of(data.train, data.train_docs)]
    val = [TOK.decode(d) for d in docs_of(data.val, data.val_docs)]
    assert data.report["duplicate_documents"] == len(train + val) - len(set(train + val))
    assert data.report["train_val_shared_documents"] == sum(d in set(train) for d in val)
    assert data.report["train_val_shared_documents"] > 0
    lengths = [len(d) + 1 for d in docs_of(data.train, data.train_docs)]
    lengths += [len(d) + 1 for d in docs_of(data.val, data.val_docs)]
    assert data.report["tokens_per_document"] == {
        "mean": sum(lengths) / len(lengths),
        "min": min(lengths),
        "max": max(lengths),
    }


def test_a_batch_holds_a_bounded_number_of_documents(tmp_path, monkeypatch):
    """Tiny documents fill a batch of BATCH_CHARS characters with ~100k Python strings and
    arrays; a batch also ends at BATCH_PIECES pieces, so its objects stay bounded."""
    sizes = []
    encode = encode_mod._encode_batch

    def spy(encoder, texts, *args):
        sizes.append(len(texts))
        return encode(encoder, texts, *args)

    monkeypatch.setattr(encode_mod, "_encode_batch", spy)
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(f'"{i}"\n' for i in range(30_000)))
    data = prepare(PrepareConfig(sources=[str(path)], out=str(tmp_path / "d")), progress=False)
    assert data.meta["train_documents"] + data.meta["val_documents"] == 30_000
    assert max(sizes) <= 8192 and sum(sizes) == 30_000


def test_a_folder_of_many_files_costs_little_per_file_and_is_reported_as_one_source(
    tmp_path, capsys
):
    def prepare_files(n: int):
        folder = tmp_path / f"files{n}"
        folder.mkdir()
        for i in range(n):
            (folder / f"{i:05d}.txt").write_text(f"File number {i}.")
        config = PrepareConfig(sources=[str(folder)], out=str(tmp_path / f"d{n}"))
        box = {}
        peak = _peak_bytes(lambda: box.setdefault("data", prepare(config, progress=False)))
        return peak, box["data"], folder

    prepare_files(10)  # one-time costs (the tokenizer's caches) out of the comparison
    small, _, _ = prepare_files(500)
    large, data, folder = prepare_files(2500)
    per_file = (large - small) / 2000
    assert per_file < 800, f"{per_file:.0f} bytes per file"
    (source,) = data.report["sources"]  # one entry for the folder, not one per file
    assert source["source"] == str(folder) and source["files"] == 2500
    assert source["documents"] == 2500
    assert "(text, 2,500 files): 2,500 document(s)" in format_report(data.report)
