"""The command line: every command and flag has help, options come from flags and YAML files,
a user's mistake exits 2 with a message, and `prepare` never loads PyTorch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import SHAKESPEARE, run_cli
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
    config_cls, _run = cmd.load()
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
