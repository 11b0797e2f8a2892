"""The run-folder layout: one place names its parts, and a run folder is a MODEL argument."""

from __future__ import annotations

import pytest

from gpt2kit.errors import UserError
from gpt2kit.formats.hf import resolve_model
from gpt2kit.runs import RunDir, is_run_folder


def test_a_run_folder_is_recognised_only_with_its_config_beside_its_outputs(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    assert not is_run_folder(run.path)
    run.config.write_text("lr: 0.001\n")
    assert not run.is_run_folder()  # a config.yaml alone could be anyone's
    run.metrics.write_text("")
    assert is_run_folder(run.path)
    assert run.abandoned.parent == run.checkpoints and run.path in run.best.parents


def test_a_run_folder_as_model_is_its_best_model_else_its_final_one(tmp_path):
    run = RunDir(tmp_path / "run")
    with pytest.raises(UserError, match="best/ or final/"):
        run.path.mkdir() or resolve_model(run.path)
    for folder in (run.final, run.best):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        assert resolve_model(run.path) == folder
    assert run.models() == (run.best, run.final)
