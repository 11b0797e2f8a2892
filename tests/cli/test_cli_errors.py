"""Errors the user's environment causes (a missing extra, an unwritable output path, a full or
read-only disk) exit 2 naming the path and the fix; other OS errors stay bugs."""

from __future__ import annotations

import errno
import os
import sys

import pytest

from conftest import SHAKESPEARE
from gpt2kit import fsutil
from gpt2kit.cli import main


def test_hf_source_without_datasets_names_the_packages_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    status = main(["prepare", "hf:someone/corpus", "--out", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "pip install datasets pyarrow" in err and "gpt2kit[data]" not in err


@pytest.fixture
def book(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(SHAKESPEARE.read_text()[:20_000])
    return path


TRAIN_TINY = ["train", "{book}", "--init", "scratch", "--preset", "tiny", "--max-steps", "1"]


@pytest.mark.parametrize(
    "args, where, fix",
    [
        (
            ["prepare", "{book}", "--out", "{file}/data"],
            "{file}: File exists. ",
            "choose another --out, or move the file away",
        ),
        (
            [*TRAIN_TINY, "--out", "{file}/run"],
            "{file}/run: Not a directory. ",
            "choose another --out, or move the file away",
        ),
        (
            ["generate", "{model}", "hi", "--max-new-tokens", "1", "--output", "{folder}"],
            "{folder}: Is a directory. ",
            "give --output a file name",
        ),
    ],
    ids=["prepare", "train", "generate"],
)
def test_an_output_path_that_cannot_be_written_exits_2_naming_it(
    tmp_path, hf_model_dir, book, capsys, args, where, fix
):
    """Root ignores permissions, so the unwritable paths here run through a regular file."""
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "a-folder").mkdir()
    subs = dict(
        book=str(book),
        file=str(tmp_path / "a-file"),
        folder=str(tmp_path / "a-folder"),
        model=str(hf_model_dir),
    )
    status = main([a.format(**subs) for a in args])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith(f"gpt2kit {args[0]}: error: {where.format(**subs)}"), err
    assert fix in err


@pytest.mark.parametrize(
    "code, named, fix",
    [
        (errno.ENOSPC, True, "The disk is full: free some space, or point --out at another disk"),
        (errno.EROFS, True, "read-only: point --out at a writable folder"),
        (errno.EDQUOT, True, "quota"),
        (errno.ENOSPC, False, "No space left on device while writing. The disk is full"),
    ],
    ids=["full", "read-only", "quota", "full-unnamed"],
)
def test_a_full_or_read_only_disk_exits_2_with_the_reason_and_the_fix(
    tmp_path, book, capsys, monkeypatch, code, named, fix
):
    def fail(folder):  # the disk gives out while prepare's output is flushed
        raise OSError(code, os.strerror(code), *([str(folder)] if named else []))

    monkeypatch.setattr(fsutil, "fsync_tree", fail)
    status = main(["prepare", str(book), "--out", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("gpt2kit prepare: error: ") and fix in err
    assert (str(tmp_path / ".tmp-data") in err) == named
    assert os.strerror(code) in err
    assert not (tmp_path / "data").exists()


def test_other_os_errors_are_not_taken_for_the_users(tmp_path, book, monkeypatch):
    def fail(folder):
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(folder))

    monkeypatch.setattr(fsutil, "fsync_tree", fail)
    with pytest.raises(OSError, match="Input/output error"):
        main(["prepare", str(book), "--out", str(tmp_path / "data")])
