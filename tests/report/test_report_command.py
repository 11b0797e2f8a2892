"""`gpt2kit report`: one run's report where it belongs or at --out, several runs on one page,
and mistakes told in one message with exit status 2."""

from __future__ import annotations

from gpt2kit.cli.parser import main

from .conftest import eval_record, make_run, train_record


def test_one_run_gets_its_report_and_several_a_comparison(tmp_path, monkeypatch, capsys):
    a = make_run(tmp_path / "a", [train_record(1, 5.0), eval_record(1, 4.5)])
    b = make_run(tmp_path / "b", [train_record(1, 6.0), eval_record(1, 5.5)])
    assert main(["report", str(a)]) == 0
    assert (a / "report.html").is_file() and f"Wrote {a / 'report.html'}" in capsys.readouterr().out
    assert main(["report", str(a), "--out", str(tmp_path / "pages" / "a.html")]) == 0
    assert "Run report: a" in (tmp_path / "pages" / "a.html").read_text()
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(a), str(b)]) == 0
    page = (tmp_path / "compare.html").read_text()
    assert "Comparing 2 runs" in page and "5.5000" in page and "4.5000" in page


def test_a_folder_that_is_not_a_run_is_refused_with_exit_2(tmp_path, capsys):
    run = make_run(tmp_path / "run", [train_record(1, 5.0)])
    (tmp_path / "notes").mkdir()
    assert main(["report", str(run), str(tmp_path / "notes"), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpt2kit report: error: Cannot write a report:")
    assert f"{tmp_path / 'notes'} is not a run folder" in err
    assert f"{tmp_path / 'missing'} is not a run folder" in err
    assert "Traceback" not in err and not (tmp_path / "compare.html").exists()


def test_no_run_or_a_folder_as_out_is_refused_with_exit_2(tmp_path, capsys):
    assert main(["report"]) == 2
    assert "give at least one RUN_DIR" in capsys.readouterr().err
    run = make_run(tmp_path / "run", [train_record(1, 5.0)])
    assert main(["report", str(run), "--out", str(tmp_path)]) == 2
    assert "is a folder: give a file name" in capsys.readouterr().err
