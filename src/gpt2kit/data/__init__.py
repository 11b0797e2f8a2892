"""Data: text sources -> a prepared DATA_DIR of token files, and reading it back.

- `options`: `PrepareConfig` (the flags of `gpt2kit prepare`) and `ReadOptions` (how sources
  are read into documents, shared by prepare, train and eval).
- `sources`: finding SOURCE arguments and reading them as documents (`iter_documents`).
- `preparation`: `prepare(config) -> PreparedData` tokenizes the sources into DATA_DIR, or
  reuses it; `run_prepare(config)` is the command (prepare, then print the report).
- `encode`: text -> token ids (tiktoken's fast path for GPT-2), batched on threads.
- `store`: the DATA_DIR's files; `load_prepared(data_dir)`, `is_prepared_dir(path)`.
- `report`: the data report (`build_report`, `format_report`).
"""

from gpt2kit.data.options import PrepareConfig, ReadOptions
from gpt2kit.data.preparation import prepare, run_prepare
from gpt2kit.data.report import build_report, format_report
from gpt2kit.data.sources import iter_documents
from gpt2kit.data.store import PreparedData, is_prepared_dir, load_prepared

__all__ = [
    "PrepareConfig",
    "PreparedData",
    "ReadOptions",
    "build_report",
    "format_report",
    "is_prepared_dir",
    "iter_documents",
    "load_prepared",
    "prepare",
    "run_prepare",
]
