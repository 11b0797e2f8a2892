"""The report pages: one run (`render_run`) and several side by side (`render_compare`), each
one self-contained HTML file (inline CSS and SVG, no script, nothing fetched), and the
functions that write them (`write_run_report`, `write_compare_report`).

Every string that comes from the run (samples, prompts, options, paths, source names) is
escaped: a sample is text a model wrote, and it is shown as text, never as markup.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from html import escape
from pathlib import Path
from typing import Any

from gpt2kit.fsutil import write_text_atomic
from gpt2kit.report.data import Record, RunData, command_line, load_run
from gpt2kit.report.svg import PALETTE, Series, line_chart


def e(value: Any) -> str:
    """`value` as text, escaped for HTML (quotes included)."""
    return escape(str(value), quote=True)


def number(value: Any, digits: int = 4) -> str:
    """A figure for a table: `digits` decimals, thousands separators for counts, '-' when
    there is none."""
    if isinstance(value, bool) or value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if math.isfinite(value) else str(value)
    return e(value)


def duration(seconds: float | None) -> str:
    """Seconds as '12.3 s', '4 min 05 s' or '2 h 03 min'."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
  color: #1b1f24; background: #f6f7f9; }
main { max-width: 1320px; margin: 0 auto; padding: 20px 28px 60px; }
h1 { font-size: 22px; margin: 8px 0 2px; word-break: break-all; }
h2 { font-size: 17px; margin: 30px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #d9dde3; }
h3 { font-size: 14px; margin: 16px 0 6px; }
.sub { color: #57606a; margin: 0 0 10px; }
.stop { display: inline-block; padding: 3px 10px; border-radius: 12px; font-weight: 600;
  background: #dafbe1; color: #116329; }
.stop.warn { background: #fff8c5; color: #7d4e00; }
.stop.bad { background: #ffebe9; color: #a40e26; }
table { border-collapse: collapse; background: #fff; margin: 4px 0 8px; }
th, td { border: 1px solid #d9dde3; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #eef1f4; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
.config { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr));
  gap: 0 16px; background: #fff; border: 1px solid #d9dde3; padding: 6px 10px; border-radius: 6px; }
.config div { display: flex; gap: 8px; padding: 2px 0; border-bottom: 1px solid #f0f2f4; }
.config dt { font-weight: 600; min-width: 150px; }
.config dd { margin: 0; }
tr.best td { background: #e6f4ea; }
tr.base td { background: #eef4fb; }
.kv th { width: 200px; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 12px; }
svg.chart { width: 100%; height: auto; background: #fff; border: 1px solid #d9dde3; border-radius: 6px; }
svg .plot-area { fill: #fff; stroke: #c9ced6; }
svg .grid { stroke: #eceef1; }
svg .tick { font-size: 11px; fill: #57606a; }
svg .axis-label { font-size: 12px; fill: #3d444d; }
svg .chart-title { font-size: 14px; font-weight: 600; fill: #1b1f24; }
svg .legend { font-size: 12px; fill: #1b1f24; }
svg .no-data { font-size: 14px; fill: #8c959f; }
.scroll { overflow-x: auto; }
.samples td { min-width: 260px; max-width: 420px; }
pre { white-space: pre-wrap; word-break: break-word; margin: 0;
  font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre.command { background: #fff; border: 1px solid #d9dde3; padding: 8px 10px; border-radius: 6px; }
.prompt { background: #fff3b0; font-weight: 600; }
.note { color: #7d4e00; }
.warning { color: #a40e26; }
.delta.better { color: #116329; }
.delta.worse { color: #a40e26; }
footer { margin-top: 40px; color: #8c959f; font-size: 12px; }
"""


def page(title: str, body: str) -> str:
    """A whole HTML document: `title`, the style sheet and `body` (already escaped)."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{body}<footer>Written by gpt2kit on {e(time.strftime('%Y-%m-%d %H:%M:%S'))}."
        "</footer></main></body></html>\n"
    )


def table(header: list[str], rows: Iterable[list[str]], cls: str = "", row_cls: Any = None) -> str:
    """An HTML table of cells given as HTML; a header cell or a cell starting with '#' is
    right-aligned (a number), the '#' dropped."""

    def cell(tag: str, text: str) -> str:
        if text.startswith("#"):
            return f'<{tag} class="num">{text[1:]}</{tag}>'
        return f"<{tag}>{text}</{tag}>"

    head = "".join(cell("th", h) for h in header)
    body = []
    for i, row in enumerate(rows):
        klass = row_cls(i) if row_cls else ""
        attr = f' class="{klass}"' if klass else ""
        body.append(f"<tr{attr}>{''.join(cell('td', c) for c in row)}</tr>")
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def key_values(rows: list[tuple[str, str]], section_id: str = "") -> str:
    """A two-column table of (label, HTML value)."""
    attr = f' id="{section_id}"' if section_id else ""
    cells = "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv"{attr}><tbody>{cells}</tbody></table>'


def stop_badge(run: RunData) -> str:
    kind = {"completed": "", "early_stopping": "", "max_time": "warn", "SIGINT": "warn"}.get(
        run.stopped, "bad"
    )
    kind = "warn" if run.stopped == "SIGTERM" else kind
    return f'<span class="stop {kind}" data-stopped="{e(run.stopped)}">{e(run.stopped)}</span>'


def points(records: list[Record], key: str) -> list[tuple[float, float]]:
    """(step, value) of `records` that hold a number under `key`."""
    out = []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append((float(r["step"]), float(v)))
    return out


def evaluations_with_base(run: RunData) -> list[Record]:
    """The run's evaluations, the starting model's first (step 0)."""
    return ([run.base] if run.base else []) + run.evals


# ---- one run -------------------------------------------------------------------------------


def header(run: RunData) -> str:
    steps = run.config.get("resolved_total_steps")
    of = f" of {steps:,}" if isinstance(steps, int) else ""
    return (
        f"<h1>Run report: {e(run.name)}</h1>"
        f'<p class="sub">{e(run.path.resolve())} &middot; step {run.last_step:,}{of} &middot; '
        f"{stop_badge(run)}</p>"
    )


def start_point(config: dict[str, Any]) -> str:
    """Where the run started: the pretrained model, or the size of the new one."""
    init = config.get("init")
    if init is None:
        return "-"
    if init != "scratch":
        return f"fine-tuning {e(init)}"
    sizes = [
        f"{config.get(k)} {label}"
        for k, label in (("n_layer", "layers"), ("n_head", "heads"), ("n_embd", "wide"))
        if config.get(k)
    ]
    preset = config.get("preset") or "tiny"
    return e(f"from scratch: preset {preset}" + (f" ({', '.join(sizes)})" if sizes else ""))


def eval_figures(record: Record | None) -> str:
    if not record:
        return "-"
    return (
        f"loss {number(record.get('val_loss'))}, perplexity {number(record.get('val_ppl'), 2)}, "
        f"{number(record.get('val_bpc'), 3)} bits per character (step {record['step']:,})"
    )


def overview(run: RunData) -> str:
    s = run.summary or {}
    rows = [
        ("How it stopped", f"{stop_badge(run)} {e(run.stop_text)}"),
        ("Start", start_point(run.config)),
        ("Steps", number(run.last_step)),
        ("Tokens seen", number(run.tokens_seen)),
        ("Training time", e(duration(run.train_seconds))),
        ("Best validation", eval_figures(run.best_eval)),
        ("Last validation", eval_figures(run.last_eval)),
    ]
    if run.base:
        rows.append(("Starting model", eval_figures(run.base)))
    if "exit_code" in s:
        rows.append(("Exit status", number(s["exit_code"])))
    if run.skipped:
        steps = ", ".join(f"{r['step']:,}" for r in run.skipped[:50])
        more = f" and {len(run.skipped) - 50} more" if len(run.skipped) > 50 else ""
        rows.append(
            (
                "Non-finite steps",
                f'<span class="warning">{len(run.skipped)} skipped (no update): steps {e(steps)}{e(more)}</span>',
            )
        )
    return '<section id="overview"><h2>Overview</h2>' + key_values(rows) + "</section>"


def curves(run: RunData) -> str:
    evals = evaluations_with_base(run)
    charts = [
        line_chart(
            [
                Series("train loss", points(run.train, "loss"), PALETTE[0]),
                Series("validation loss", points(evals, "val_loss"), PALETTE[1], markers=True),
            ],
            title="Loss",
            y_label="nats per token",
            chart_id="loss",
        ),
        line_chart(
            [Series("validation", points(evals, "val_bpc"), PALETTE[1], markers=True)],
            title="Bits per character",
            y_label="bits per character",
            chart_id="bpc",
        ),
        line_chart(
            [Series("learning rate", points(run.train, "lr"), PALETTE[2])],
            title="Learning rate",
            chart_id="lr",
        ),
        line_chart(
            [Series("gradient norm", points(run.train, "grad_norm"), PALETTE[3])],
            title="Gradient norm (before clipping)",
            chart_id="grad_norm",
        ),
        line_chart(
            [Series("tokens/s", points(run.train, "tokens_per_s"), PALETTE[4])],
            title="Throughput",
            y_label="tokens per second",
            chart_id="tokens_per_s",
        ),
    ]
    note = (
        '<p class="sub">Validation points are at the evaluations'
        + (" (step 0: the starting model, before any training)" if run.base else "")
        + ".</p>"
    )
    return f'<section id="curves"><h2>Curves</h2>{note}<div class="charts">{"".join(charts)}</div></section>'


def evaluation_table(run: RunData) -> str:
    evals = evaluations_with_base(run)
    if not evals:
        return (
            '<section id="evaluations"><h2>Evaluations</h2>'
            "<p>No evaluation yet (the run evaluates every --eval-every steps and at its end).</p></section>"
        )
    best = run.best_eval

    def label(r: Record) -> str:
        if r.get("base"):
            return "0 (starting model)"
        return f"{r['step']:,}" + (" (best)" if r is best else "")

    rows = [
        [
            "#" + label(r),
            "#" + number(r.get("tokens_seen")),
            "#" + number(r.get("val_loss")),
            "#" + number(r.get("val_ppl"), 2),
            "#" + number(r.get("val_bpc"), 3),
            "#" + number(r.get("val_tokens")),
        ]
        for r in evals
    ]
    header_ = ["#step", "#tokens seen", "#val loss", "#perplexity", "#bits/char", "#tokens scored"]

    def row_cls(i: int) -> str:
        return "base" if evals[i].get("base") else "best" if evals[i] is best else ""

    return (
        '<section id="evaluations"><h2>Evaluations</h2>'
        + table(header_, rows, cls="evals", row_cls=row_cls)
        + "</section>"
    )


def sample_html(text: Any, prompt: Any) -> str:
    """One sample as preformatted text, its prompt highlighted."""
    text = str(text)
    if isinstance(prompt, str) and prompt and text.startswith(prompt):
        return (
            f'<pre class="sample"><span class="prompt">{e(prompt)}</span>'
            f"{e(text[len(prompt) :])}</pre>"
        )
    return f'<pre class="sample">{e(text)}</pre>'


def prompt_label(records: list[Record], i: int) -> str:
    for r in records:
        prompts = r.get("sample_prompts") or []
        if i < len(prompts):
            p = prompts[i]
            return "the start of a text" if p == "" else f"&ldquo;{e(p)}&rdquo;"
    return f"sample {i + 1}"


def samples_grid(records: list[Record], titles: list[str], table_id: str) -> str:
    """The samples of `records` side by side: a column per record (titled `titles`), a row
    per prompt."""
    n = max(len(r.get("samples") or []) for r in records)
    rows = []
    for i in range(n):
        cells = [f"<b>{i + 1}</b>: {prompt_label(records, i)}"]
        for r in records:
            samples = r.get("samples") or []
            prompts = r.get("sample_prompts") or []
            cells.append(
                sample_html(samples[i], prompts[i] if i < len(prompts) else None)
                if i < len(samples)
                else "-"
            )
        rows.append(cells)
    return (
        f'<div class="scroll" id="{table_id}">'
        + table(["prompt", *titles], rows, "samples")
        + "</div>"
    )


def samples_section(run: RunData) -> str:
    records = [r for r in evaluations_with_base(run) if r.get("samples")]
    if not records:
        return (
            '<section id="samples"><h2>Samples</h2><p>No samples (none were generated: '
            "--samples 0, or no evaluation yet).</p></section>"
        )
    seeds = {r.get("sample_seed") for r in records} - {None}
    seed = f" and seed {e(seeds.pop())}" if len(seeds) == 1 else ""
    titles = ["starting model" if r.get("base") else f"step {r['step']:,}" for r in records]
    return (
        '<section id="samples"><h2>Samples</h2>'
        f'<p class="sub">At each evaluation, from the same prompts{seed} (temperature 0.8): '
        "read across to watch them improve. Highlighted: the prompt.</p>"
        + samples_grid(records, titles, "samples-grid")
        + "</section>"
    )


def base_vs_tuned(run: RunData) -> str:
    """The starting model beside the tuned one: figures and samples (fine-tuning runs)."""
    head = '<section id="base-vs-tuned"><h2>Base vs tuned</h2>'
    if not run.base:
        return (
            head + "<p>The starting model was not evaluated (a run that began before gpt2kit "
            "evaluated it, or that has not started yet).</p></section>"
        )
    tuned = run.last_eval
    if not tuned:
        return (
            head
            + f"<p>Starting model: {eval_figures(run.base)}. No evaluation of the tuned model yet.</p></section>"
        )
    rows = []
    for key, name, digits in (
        ("val_loss", "validation loss", 4),
        ("val_ppl", "perplexity", 2),
        ("val_bpc", "bits per character", 3),
    ):
        a, b = run.base.get(key), tuned.get(key)
        delta = "-"
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            d = b - a
            cls = "better" if d < 0 else "worse" if d > 0 else ""
            pct = f" ({d / a:+.1%})" if a else ""
            delta = f'<span class="delta {cls}">{d:+,.{digits}f}{pct}</span>'
        rows.append([e(name), "#" + number(a, digits), "#" + number(b, digits), "#" + delta])
    title = f"tuned (step {tuned['step']:,})"
    base_from = e(run.config.get("init", "the starting model"))
    out = (
        head
        + f'<p class="sub">The starting model ({base_from}) scored on the same validation tokens, '
        "before the first step, beside the tuned model's last evaluation: what training bought.</p>"
        + table(["", "#starting model", f"#{e(title)}", "#change"], rows, "base-vs-tuned")
    )
    if run.base.get("samples") and tuned.get("samples"):
        out += "<h3>Samples, same prompts and seed</h3>" + samples_grid(
            [run.base, tuned], ["starting model", e(title)], "base-vs-tuned-samples"
        )
    return out + "</section>"


def models(run: RunData) -> str:
    r = run.run
    best, final = run.best_eval, run.summary.get("final_model") if run.summary else None
    rows = []
    if r.best.is_dir():
        at = (
            f" (step {best['step']:,}, validation loss {number(best.get('val_loss'))})"
            if best
            else ""
        )
        rows.append(("best/", f"{e(r.best)}{at}"))
    else:
        rows.append(("best/", "not written (no evaluation yet)"))
    if r.final.is_dir():
        rows.append(("final/", f"{e(final or r.final)} (the model at step {run.last_step:,})"))
    else:
        why = (
            "not written: a run stopped by a signal, an error or non-finite steps keeps its "
            "checkpoint instead; the same command continues it"
            if run.stopped not in ("completed", "max_time", "early_stopping")
            else "missing"
        )
        rows.append(("final/", e(why)))
    return '<section id="models"><h2>Models</h2>' + key_values(rows) + "</section>"


def timing(run: RunData) -> str:
    seconds, tokens = run.train_seconds, run.tokens_seen
    steps = run.last_step
    tps = [r["tokens_per_s"] for r in run.train if isinstance(r.get("tokens_per_s"), (int, float))]
    tps.sort()
    rows = [
        (
            "Training time",
            e(duration(seconds)) + " (all invocations of the run, evaluations included)",
        ),
        ("Steps", number(steps)),
        ("Time per step", f"{seconds / steps:.3f} s" if seconds and steps else "-"),
        ("Tokens per second", f"{tokens / seconds:,.0f} overall" if seconds and tokens else "-"),
        ("Logged throughput", f"median {tps[len(tps) // 2]:,.0f} tokens/s" if tps else "-"),
        ("Evaluations", number(len(run.evals) + (1 if run.base else 0))),
    ]
    return '<section id="timing"><h2>Timing</h2>' + key_values(rows) + "</section>"


def data_section(run: RunData) -> str:
    d = run.data_report
    head = '<section id="data"><h2>Data</h2>'
    if not d:
        return head + "<p>No data report (report.json) was found for this run.</p></section>"

    def split(name: str) -> str:
        s = d.get(name) or {}
        return (
            f"{number(s.get('documents'))} documents, {number(s.get('characters'))} characters, "
            f"{number(s.get('tokens'))} tokens"
        )

    rows = [
        ("Data folder", e(d.get("data_dir") or "-")),
        ("Tokenizer", f"{e(d.get('tokenizer'))} ({number(d.get('vocab_size'))} ids)"),
    ]
    for s in d.get("sources") or []:
        rows.append(
            (
                f"{s.get('role', '')} source".strip(),
                f"{e(s.get('source'))} ({e(s.get('kind'))}): {number(s.get('documents'))} documents",
            )
        )
    rows += [
        ("Documents", number(d.get("documents"))),
        ("Characters", number(d.get("characters"))),
        ("Tokens", number(d.get("tokens"))),
        ("Characters per token", number(d.get("characters_per_token"), 3)),
        ("Split", e(d.get("split", "-"))),
        ("Train", split("train")),
        ("Validation", split("val")),
        (
            "Duplicates",
            f"{number(d.get('duplicate_documents'))} exact duplicate documents, "
            f"{number(d.get('train_val_shared_documents'))} shared by train and validation",
        ),
    ]
    warnings = "".join(f'<p class="warning">warning: {e(w)}</p>' for w in d.get("warnings") or [])
    return head + key_values(rows) + warnings + "</section>"


def config_section(run: RunData) -> str:
    head = '<section id="config"><h2>Command and options</h2>'
    if not run.config:
        return head + "<p>No config.yaml: the options of this run are unknown.</p></section>"
    command = command_line(run.config)

    def shown(value: Any) -> str:
        if isinstance(value, list):
            return " ".join(map(str, value)) or "[]"
        return "none" if value is None else str(value)

    items = "".join(
        f"<div><dt>{e(k)}</dt><dd><pre>{e(shown(v))}</pre></dd></div>"
        for k, v in run.config.items()
    )
    return (
        head + '<p class="sub">A command that gives these options (the options that differ from '
        "the defaults; running it again resumes the run):</p>"
        + f'<pre class="command">{e(command)}</pre>'
        + "<h3>Resolved options (config.yaml)</h3>"
        + f'<dl class="config">{items}</dl>'
        + "</section>"
    )


def notes_section(run: RunData) -> str:
    if not run.notes:
        return ""
    items = "".join(f'<li class="note">{e(n)}</li>' for n in run.notes)
    return f'<section id="notes"><h2>Notes</h2><ul>{items}</ul></section>'


def render_run(run: RunData) -> str:
    """The report of one run, as an HTML document."""
    parts: list[Callable[[RunData], str]] = [
        header, overview, curves, evaluation_table, samples_section,
    ]  # fmt: skip
    if run.fine_tuning:
        parts.append(base_vs_tuned)
    parts += [models, timing, data_section, config_section, notes_section]
    return page(f"gpt2kit run report: {run.name}", "".join(p(run) for p in parts))


# ---- several runs --------------------------------------------------------------------------


def run_names(runs: list[RunData]) -> list[str]:
    """A short distinct name for each run: its folder name, with parents added until the
    names differ."""
    for depth in range(1, 8):
        names = ["/".join(r.path.resolve().parts[-depth:]) if depth > 1 else r.name for r in runs]
        if len(set(names)) == len(names):
            return names
    return [str(r.path) for r in runs]


def render_compare(runs: list[RunData], out: Path) -> str:
    """One page comparing `runs`: their final figures in one table and their curves overlaid
    (`out`, where the page goes, makes the links to each run's own report relative)."""
    names = run_names(runs)
    rows = []
    for name, run in zip(names, runs, strict=True):
        link = e(name)
        if run.run.report.is_file():
            href = os.path.relpath(run.run.report.resolve(), out.resolve().parent)
            link = f'<a href="{e(Path(href).as_posix())}">{e(name)}</a>'
        best, last = run.best_eval, run.last_eval
        rows.append(
            [
                link,
                start_point(run.config),
                stop_badge(run),
                "#" + number(run.last_step),
                "#" + number(run.tokens_seen),
                "#" + e(duration(run.train_seconds)),
                "#" + number(best.get("val_loss") if best else None),
                "#" + number(best.get("val_bpc") if best else None, 3),
                "#" + number(last.get("val_loss") if last else None),
                "#" + number(last.get("val_ppl") if last else None, 2),
                "#" + number(last.get("val_bpc") if last else None, 3),
                "#" + number(run.base.get("val_loss") if run.base else None),
            ]
        )
    header_ = [
        "run", "start", "stopped", "#steps", "#tokens", "#time", "#best val loss",
        "#best bits/char", "#last val loss", "#last perplexity", "#last bits/char",
        "#starting model's val loss",
    ]  # fmt: skip

    def overlay(key: str, source: str, title: str, y_label: str, chart_id: str) -> str:
        series = []
        for i, (name, run) in enumerate(zip(names, runs, strict=True)):
            records = run.train if source == "train" else evaluations_with_base(run)
            series.append(
                Series(
                    name,
                    points(records, key),
                    PALETTE[i % len(PALETTE)],
                    markers=source == "eval",
                    dashed=i >= len(PALETTE),
                )
            )
        return line_chart(series, title=title, y_label=y_label, chart_id=chart_id)

    charts = [
        overlay("loss", "train", "Training loss", "nats per token", "train_loss"),
        overlay("val_loss", "eval", "Validation loss", "nats per token", "val_loss"),
        overlay("val_bpc", "eval", "Bits per character", "bits per character", "bpc"),
        overlay("lr", "train", "Learning rate", "", "lr"),
        overlay("grad_norm", "train", "Gradient norm", "", "grad_norm"),
        overlay("tokens_per_s", "train", "Throughput", "tokens per second", "tokens_per_s"),
    ]
    notes = "".join(
        f'<li class="note">{e(name)}: {e(n)}</li>'
        for name, run in zip(names, runs, strict=True)
        for n in run.notes
    )
    body = (
        f"<h1>Comparing {len(runs)} runs</h1>"
        f'<p class="sub">{e(", ".join(names))}</p>'
        '<section id="figures"><h2>Final figures</h2>'
        + table(header_, rows, "compare")
        + "</section>"
        + f'<section id="curves"><h2>Curves</h2><div class="charts">{"".join(charts)}</div></section>'
        + (f'<section id="notes"><h2>Notes</h2><ul>{notes}</ul></section>' if notes else "")
    )
    return page(f"gpt2kit: comparing {len(runs)} runs", body)


# ---- writing -------------------------------------------------------------------------------


def write_run_report(
    run_dir: str | Path, out: str | Path | None = None, crashed: bool = False
) -> Path:
    """Render the report of the run folder `run_dir` into `out` (default: its `report.html`),
    atomically; `crashed`: the run is ending with an error now. Returns the path written."""
    run = load_run(run_dir, crashed=crashed)
    target = Path(out) if out is not None else run.run.report
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, render_run(run))
    return target


def write_compare_report(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Render the page comparing the run folders `run_dirs` into `out`, atomically."""
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, render_compare([load_run(d) for d in run_dirs], target))
    return target
