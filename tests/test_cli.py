"""The command line: every flag documented, user mistakes exit 2 with a message, no traceback."""

from __future__ import annotations

import errno
import importlib
import os
import subprocess
import sys

import pytest

from conftest import SHAKESPEARE, run_cli
from gpt2kit import fsutil
from gpt2kit.cli import COMMANDS, main
from gpt2kit.config import options_of


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in COMMANDS:
        assert cmd.name in out and cmd.summary in out


@pytest.mark.parametrize("cmd", COMMANDS, ids=[c.name for c in COMMANDS])
def test_every_flag_of_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit):
        main([cmd.name, "--help"])
    out = capsys.readouterr().out
    config_cls = getattr(importlib.import_module(cmd.module), cmd.config)
    for f, _type in options_of(config_cls):
        assert f.metadata["help"], f"{cmd.name}: field {f.name} has no help text"
        if f.metadata.get("positional"):
            assert (f.metadata.get("metavar") or f.name) in out
        else:
            assert "--" + f.name.replace("_", "-") in out, f.name


def test_prepare_never_imports_pytorch(tmp_path):
    """`prepare` (its --help and a real run) loads neither PyTorch nor the other commands."""
    (tmp_path / "book.txt").write_text(SHAKESPEARE.read_text()[:20_000])
    code = f"""
import sys
from gpt2kit.cli import main
try:
    main(["prepare", "--help"])
except SystemExit as e:
    assert e.code == 0, e.code
assert "torch" not in sys.modules, "prepare --help imported torch"
status = main(["prepare", {str(tmp_path / "book.txt")!r}, "--out", {str(tmp_path / "data")!r}])
assert status == 0, status
assert "torch" not in sys.modules, "prepare imported torch"
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "train.bin").is_file()


def test_python_dash_m_and_version():
    result = run_cli("--version")
    assert result.returncode == 0 and "gpt2kit" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "/does/not/exist", "hi"], "does not exist"),
        (
            ["generate", "{model}", "hi", "--max-new-tokens", "0"],
            "--max-new-tokens must be at least 1",
        ),
        (["generate", "{model}", "hi", "--temperature", "-1"], "--temperature must be >= 0"),
        (["generate", "{model}", "hi", "--max-new-tokens", "many"], "invalid int value"),
        (["generate", "{empty}", "hi"], "no config.json"),
        (["generate", "{broken}", "hi"], "no model.safetensors"),
        (["generate", "{model}", "hi", "--config", "{missing_yaml}"], "does not exist"),
        (["generate", "{model}", "hi", "--device", "cuda:7"], "CUDA"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_user_mistakes_exit_2_with_a_message(tmp_path, hf_model_dir, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text((hf_model_dir / "config.json").read_text())
    subs = dict(
        model=str(hf_model_dir),
        empty=str(tmp_path / "empty"),
        broken=str(tmp_path / "broken"),
        missing_yaml=str(tmp_path / "nope.yaml"),
    )
    result = run_cli(*[a.format(**subs) for a in args])
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_yaml_config_is_read_and_flags_win(tmp_path, hf_model_dir):
    cfg = tmp_path / "gen.yaml"
    cfg.write_text("temperature: 0\nmax-new-tokens: 5\n")
    a = run_cli("generate", str(hf_model_dir), "Hello", "--config", str(cfg))
    b = run_cli(
        "generate", str(hf_model_dir), "Hello", "--temperature", "0", "--max-new-tokens", "5"
    )
    c = run_cli(
        "generate", str(hf_model_dir), "Hello", "--config", str(cfg), "--max-new-tokens", "2"
    )
    assert a.returncode == b.returncode == c.returncode == 0
    assert a.stdout == b.stdout
    assert b.stdout.startswith(c.stdout.rstrip("\n")) and c.stdout != b.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("temprature: 0\n")
    r = run_cli("generate", str(hf_model_dir), "Hello", "--config", str(bad))
    assert r.returncode == 2 and "unknown keys: temprature" in r.stderr


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
