"""A test tokenizer with a BOS: the byte tokenizer whose post-processor puts ``<|endoftext|>``
(id 256, also EOS and pad) in front of every text, as Llama-style tokenizers add a BOS."""

from __future__ import annotations

from tokenizers import processors
from transformers import PreTrainedTokenizerFast

from textenv.lm.models import byte_tokenizer


def bos_byte_tokenizer() -> PreTrainedTokenizerFast:
    backend = byte_tokenizer().backend_tokenizer
    backend.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 256)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    tok.pad_token = tok.eos_token
    return tok
