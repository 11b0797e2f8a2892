"""Data preparation: text sources -> cached token files with a data report (`gpt2kit prepare`).

- `PrepareConfig`: the options (the flags of `gpt2kit prepare`).
- `prepare(config) -> PreparedData`: tokenize the sources into DATA_DIR, or reuse it.
- `load_prepared(data_dir)`, `is_prepared_dir(path)`: open / recognise a DATA_DIR.
- `iter_documents(sources, reading)`: the documents of SOURCE arguments as strings.
- `run_prepare(config)`: the command itself (prepare, then print the report).
"""

from gpt2kit.data.options import PrepareConfig
from gpt2kit.data.pipeline import PreparedData, is_prepared_dir, load_prepared, prepare, run_prepare
from gpt2kit.data.report import build_report, format_report
from gpt2kit.data.sources import iter_documents

__all__ = [
    "PrepareConfig",
    "PreparedData",
    "build_report",
    "format_report",
    "is_prepared_dir",
    "iter_documents",
    "load_prepared",
    "prepare",
    "run_prepare",
]
