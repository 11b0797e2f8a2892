"""`gpt2kit export` end to end: what each target writes, and bad input (a model that does not
load, an unknown --to or --dtype, an existing --out, a missing package, a tokenizer GGUF cannot
hold) exiting 2 with a message and leaving no partial file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_hf_model
from gpt2kit.cli import main
from gpt2kit.export import gguf as gguf_writer
from gpt2kit.formats.hf import load_model, save_model
from gpt2kit.model import GPT2, GPT2Config
from gpt2kit.tokenizer import train_char


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny random GPT-2 (2 layers, 32 wide, GPT-2's tokenizer), as `transformers` saves it."""
    folder = tmp_path_factory.mktemp("export") / "model"
    make_hf_model(folder)
    return folder


def export(capsys: pytest.CaptureFixture, *args) -> tuple[int, str, str]:
    """Run `gpt2kit export ARGS` in this process: (exit status, stdout, stderr)."""
    status = main(["export", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders an export left in `folder`."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((".tmp-", ".old-")))


def test_gguf_is_written_with_f16_by_default_and_says_how_to_run_it(capsys, model_dir, tmp_path):
    gguf = pytest.importorskip("gguf")
    out = tmp_path / "model.gguf"
    status, stdout, err = export(capsys, model_dir, "--to", "gguf", "--out", out)
    assert status == 0, err
    reader = gguf.GGUFReader(out)
    assert reader.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_F16
    assert f"Wrote {out} (gguf, f16" in stdout and f"llama-completion -m {out}" in stdout
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("dtype, torch_dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_hf_writes_the_folder_training_writes_with_weights_cast(
    capsys, model_dir, tmp_path, dtype, torch_dtype
):
    out = tmp_path / "hf"
    status, stdout, err = export(capsys, model_dir, "--to", "hf", "--out", out, "--dtype", dtype)
    assert status == 0, err
    model, tokenizer, _ = load_model(model_dir)
    reference = save_model(model, tokenizer, tmp_path / "final")  # what training's final/ holds
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())
    written, source = (
        load_file(out / "model.safetensors"),
        load_file(reference / "model.safetensors"),
    )
    assert written.keys() == source.keys()
    for name, tensor in written.items():
        assert tensor.dtype == torch_dtype
        assert torch.equal(tensor, source[name].to(torch_dtype)), name
    exported, _, _ = load_model(out)
    ids = torch.tensor([tokenizer.encode("Once upon a time")])
    with torch.no_grad():
        torch.testing.assert_close(exported(ids), model.to(torch_dtype).float()(ids))
    assert f"gpt2kit generate {out}" in stdout
    assert load_model(out)[1].is_gpt2  # the tokenizer goes along


def test_onnx_writes_a_model_onnx_folder(capsys, model_dir, tmp_path):
    pytest.importorskip("onnxscript")
    out = tmp_path / "onnx"
    status, stdout, err = export(capsys, model_dir, "--to", "onnx", "--out", out)
    assert status == 0, err
    assert (out / "model.onnx").is_file() and (out / "config.json").is_file()
    assert "onnxruntime.InferenceSession" in stdout
    status, _, err = export(capsys, model_dir, "--to", "onnx", "--out", out, "--dtype", "bf16")
    assert status == 2 and "--dtype for --to onnx must be one of f32, f16, got 'bf16'" in err
    assert leftovers(tmp_path) == []


def test_overwrite_replaces_an_export_and_without_it_the_old_file_stays(
    capsys, model_dir, tmp_path
):
    pytest.importorskip("gguf")
    out = tmp_path / "model.gguf"
    out.write_bytes(b"an older export")
    status, _, err = export(capsys, model_dir, "--to", "gguf", "--out", out, "--dtype", "f32")
    assert status == 2
    assert f"--out {out} exists: pass --overwrite" in err
    assert out.read_bytes() == b"an older export"
    status, _, err = export(capsys, model_dir, "--to", "gguf", "--out", out, "--overwrite")
    assert status == 0, err
    assert out.read_bytes()[:4] == b"GGUF"


def test_overwrite_never_replaces_a_folder_of_other_files(capsys, model_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("mine\n")
    status, _, err = export(capsys, model_dir, "--to", "hf", "--out", tmp_path, "--overwrite")
    assert status == 2
    assert "--overwrite replaces only a model folder" in err
    assert (tmp_path / "notes.txt").read_text() == "mine\n"


def test_bad_options_are_reported_together_naming_the_choices(capsys, model_dir, tmp_path):
    status, _, err = export(capsys, model_dir, "--to", "tflite", "--out", tmp_path / "x")
    assert status == 2
    assert "--to must be one of gguf, onnx, hf, got 'tflite'" in err
    (tmp_path / "taken.gguf").write_bytes(b"x")
    status, _, err = export(capsys, model_dir, "--to", "gguf", "--out", tmp_path / "taken.gguf",
                            "--dtype", "q4_k")  # fmt: skip
    assert status == 2
    assert "--dtype for --to gguf must be one of f32, f16, bf16, q8_0, got 'q4_k'" in err
    assert "taken.gguf exists" in err
    status, _, err = export(
        capsys, model_dir, "--to", "hf", "--out", tmp_path / "y", "--dtype", "q8_0"
    )
    assert status == 2 and "--dtype for --to hf must be one of f32, f16, bf16" in err
    status, _, err = export(capsys, model_dir, "--out", tmp_path / "z")
    assert status == 2 and "Missing required option(s): to" in err


def test_a_model_folder_that_does_not_load_exits_2(capsys, model_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (broken / name).write_bytes((model_dir / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    status, _, err = export(capsys, broken, "--to", "hf", "--out", tmp_path / "out")
    assert status == 2
    assert err.startswith(f"gpt2kit export: error: Could not load the model {broken}")
    status, _, err = export(capsys, tmp_path / "missing", "--to", "hf", "--out", tmp_path / "out")
    assert status == 2 and "does not exist" in err
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("target, package", [("gguf", "gguf"), ("onnx", "onnxscript")])
def test_a_missing_package_names_the_extra(
    capsys, model_dir, tmp_path, monkeypatch, target, package
):
    monkeypatch.setitem(sys.modules, package, None)  # `import package` raises ImportError
    status, _, err = export(capsys, model_dir, "--to", target, "--out", tmp_path / "out")
    assert status == 2
    assert f"--to {target} needs {package}" in err and 'pip install "gpt2kit[export]"' in err


def test_a_char_tokenizer_is_refused_for_gguf(capsys, tmp_path):
    pytest.importorskip("gguf")
    tokenizer = train_char(["to be or not to be, that is the question"])
    config = GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=32, n_embd=32, n_layer=1,
                        n_head=2)  # fmt: skip
    folder = save_model(GPT2(config), tokenizer, tmp_path / "char-model")
    status, _, err = export(capsys, folder, "--to", "gguf", "--out", tmp_path / "char.gguf")
    assert status == 2
    assert "char tokenizer (one id per character)" in err and "--to onnx or --to hf" in err
    assert not (tmp_path / "char.gguf").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_failed_gguf_export_leaves_no_partial_file(
    capsys, model_dir, tmp_path, monkeypatch, overwrite
):
    pytest.importorskip("gguf")
    out = tmp_path / "model.gguf"
    if overwrite:
        out.write_bytes(b"the previous export")
    real = gguf_writer.write_gguf

    def fail_halfway(model, tokenizer, path, dtype, name=None):
        real(model, tokenizer, path, dtype, name)  # the whole file is there ...
        raise OSError(28, "No space left on device")  # ... when the disk fills

    monkeypatch.setattr(gguf_writer, "write_gguf", fail_halfway)
    args = ["--to", "gguf", "--out", out, *(["--overwrite"] if overwrite else [])]
    status, _, err = export(capsys, model_dir, *args)
    assert status == 2
    assert "The disk is full" in err
    assert leftovers(tmp_path) == []
    if overwrite:
        assert out.read_bytes() == b"the previous export"
    else:
        assert not out.exists()


def test_a_failed_hf_export_leaves_no_partial_folder(capsys, model_dir, tmp_path, monkeypatch):
    from gpt2kit.export import command

    def fail_after_weights(model, tokenizer, folder):
        (Path(folder) / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "save_model", fail_after_weights)
    status, _, _ = export(capsys, model_dir, "--to", "hf", "--out", tmp_path / "hf")
    assert status == 130
    assert not (tmp_path / "hf").exists() and leftovers(tmp_path) == []
