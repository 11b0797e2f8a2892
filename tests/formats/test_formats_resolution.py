"""Resolving MODEL: a mistyped local path says the folder does not exist (and suggests the folder
meant) without asking the hub; a bare name the hub cannot answer for says so."""

from __future__ import annotations

import huggingface_hub
import pytest
from huggingface_hub.errors import LocalEntryNotFoundError

from conftest import run_cli
from gpt2kit.errors import UserError
from gpt2kit.formats.hf import resolve_model


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A current folder holding `runs/demo/best/` (a run) and `demo/`."""
    (tmp_path / "runs" / "demo" / "best").mkdir(parents=True)
    (tmp_path / "runs" / "demo" / "best" / "config.json").write_text("{}")
    (tmp_path / "demo").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def hub_calls(monkeypatch) -> list:
    """Calls to `snapshot_download`; each fails as an unreachable hub does."""
    calls = []

    def unreachable(repo_id, **kwargs):
        calls.append(repo_id)
        raise LocalEntryNotFoundError("Got: ConnectError: [Errno 111] Connection refused")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    return calls


def test_a_mistyped_run_folder_is_not_looked_up_on_the_hub(workdir):
    r = run_cli(
        "generate", "runs/dmeo", "Hello", "--max-new-tokens", "2", env={"HF_HUB_OFFLINE": "1"}
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "runs/dmeo does not exist" in r.stderr and "did you mean runs/demo?" in r.stderr
    assert "Hub" not in r.stderr


@pytest.mark.parametrize(
    "spec, suggestion",
    [
        ("runs/dmeo", "runs/demo"),
        ("./runs/dmeo", "./runs/demo"),
        ("runs/demo/bset", "runs/demo/best"),
        ("./rnus/demo", "./runs/demo"),
    ],
)
def test_path_like_models_that_do_not_exist_never_reach_the_hub(
    workdir, hub_calls, spec, suggestion
):
    with pytest.raises(UserError) as e:
        resolve_model(spec)
    assert f"{spec} does not exist" in str(e.value)
    assert f"did you mean {suggestion}?" in str(e.value)
    assert hub_calls == []


def test_a_bare_name_the_hub_cannot_answer_for_suggests_local_folders(workdir, hub_calls):
    with pytest.raises(UserError) as e:
        resolve_model("dmeo")
    assert hub_calls == ["dmeo"]  # a bare name may be a hub id: it is asked for
    message = str(e.value)
    assert "'dmeo' is neither a local folder (did you mean demo?)" in message
    assert "nor reachable on the Hugging Face Hub" in message

    r = run_cli("generate", "dmeo", "Hello", env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "neither a local folder (did you mean demo?) nor reachable" in r.stderr
    assert "HF_HUB_OFFLINE is set" in r.stderr
