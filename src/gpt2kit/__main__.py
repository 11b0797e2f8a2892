"""`python -m gpt2kit` runs the command line."""

from gpt2kit.cli import entry

entry()
