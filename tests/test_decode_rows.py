"""decode_rows: the env's completion texts, decoded in a fast tokenizer's backend directly, are
the strings ``tokenizer.decode(row, skip_special_tokens=True)`` gives."""

from __future__ import annotations

import copy

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from textenv.lm.models import load_tokenizer
from textenv.lm.padding import decode_rows

TOKENIZER = load_tokenizer("tiny")  # byte-level BPE; 256 is EOS (a special token)


def hf_decode(tokenizer, rows):
    return [tokenizer.decode(list(row), skip_special_tokens=True) for row in rows]


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.lists(st.integers(0, 256), max_size=12), max_size=6))
def test_the_same_strings_as_decode(rows):
    # byte pieces that are not UTF-8 on their own, EOS anywhere, empty rows
    assert decode_rows(TOKENIZER, rows) == hf_decode(TOKENIZER, rows)


def test_numpy_rows_and_special_tokens():
    rows = [np.array([104, 105, 256, 33]), np.array([], dtype=np.int64), np.array([256])]
    assert decode_rows(TOKENIZER, rows) == ["hi!", "", ""]


def test_cleaning_up_spaces_is_left_to_hugging_face():
    """A WordPiece tokenizer with clean-up on: Hugging Face's decode removes the space its
    decoder puts before "!", so decode_rows goes through it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[PAD]": 1, "hi": 2, "!": 3}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(cleanup=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        clean_up_tokenization_spaces=True,
    )
    assert backend.decode([2, 3]) == "hi !"
    assert decode_rows(tokenizer, [[2, 3], [1, 2]]) == hf_decode(tokenizer, [[2, 3], [1, 2]])
    assert decode_rows(tokenizer, [[2, 3]]) == ["hi!"]


def test_a_subclass_decode_is_used():
    tokenizer = copy.deepcopy(load_tokenizer("tiny"))  # (load_tokenizer's is shared: a copy)

    class Shouting(type(tokenizer)):
        def decode(self, token_ids, **kwargs):
            return super().decode(token_ids, **kwargs).upper()

    tokenizer.__class__ = Shouting
    assert decode_rows(tokenizer, [[104, 105, 32, 33]]) == ["HI !"]
