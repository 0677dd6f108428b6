"""Token constants shared by the tokenizers the package builds (no torch import: task modules
read them at ``import textenv``)."""

from __future__ import annotations

__all__ = ["EOS_TOKEN"]

# The end-of-text token of every tokenizer the package builds (GPT-2's, so hub models agree).
EOS_TOKEN = "<|endoftext|>"
