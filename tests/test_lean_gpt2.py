"""The lean GPT-2 forward computes what Hugging Face's does, and is used only where it does.

The reference is the model's own ``forward``: a forward hook makes ``lean_gpt2.supports`` say
no, so the same call goes through Hugging Face (that is the fallback path, tested here too).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from textenv.lm import lean_gpt2
from textenv.lm.models import load_causal_lm
from textenv.lm.padding import classifier_logits_left_padded, left_pad, left_pad_arrays
from textenv.lm.sampling import (
    IncrementalLM,
    SamplingConfig,
    generate,
    sample_loop,
    sequence_logprobs,
    trim_left_padding,
)

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = dict(rtol=1e-5, atol=1e-5)


class through_hf:
    """Within the block, the model goes through its own forward (a hook disables the lean one)."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.handle = self.model.register_forward_hook(lambda *a: None)
        assert not lean_gpt2.supports(self.model)

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.fixture(scope="module")
def model():
    m = load_causal_lm("builtin:prose")
    m.train(False)
    assert lean_gpt2.supports(m)
    return m


def _batch(seed: int, B: int = 6, P: int = 10, N: int = 8, vocab: int = 2000):
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(1, vocab, (B, P), generator=g)
    prompt_mask = torch.ones(B, P, dtype=torch.long)
    for b in range(B):
        prompt_mask[b, : 3 + b % 4] = 0  # every row left-padded: 3 columns are padding on all
    completion = torch.randint(1, vocab, (B, N), generator=g)
    completion_mask = torch.ones(B, N, dtype=torch.long)
    for b in range(0, B, 2):
        completion_mask[b, 2 + b :] = 0  # rows that ended early
    return prompt * prompt_mask, prompt_mask, completion * completion_mask, completion_mask


def test_supports_only_plain_gpt2_without_hooks_or_dropout(model):
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
    )
    assert not lean_gpt2.supports(llama)
    eager = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64))
    eager.config._attn_implementation = "eager"
    assert not lean_gpt2.supports(eager)
    dropout = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64))
    dropout.train(True)
    assert not lean_gpt2.supports(dropout)  # dropout active: HF applies it, the lean path not
    dropout.train(False)
    assert lean_gpt2.supports(dropout)
    handle = model.transformer.h[1].mlp.register_forward_pre_hook(lambda *a: None)
    assert not lean_gpt2.supports(model)  # a hook anywhere must see its calls
    handle.remove()
    assert lean_gpt2.supports(model)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sequence_logprobs_and_hidden_match_hf(model, temperature):
    p, pm, c, cm = _batch(0)
    with torch.no_grad():
        lean_lp, lean_h = sequence_logprobs(model, p, pm, c, cm, temperature, return_hidden=True)
        with through_hf(model):
            hf_lp, hf_h = sequence_logprobs(model, p, pm, c, cm, temperature, return_hidden=True)
    # HF's output_hidden_states leaves inert capturing hooks on the blocks: still lean after
    assert lean_gpt2.supports(model)
    real = cm.bool()
    torch.testing.assert_close(lean_lp[real], hf_lp[real], **TOL)
    assert (lean_lp[~real] == 0).all() and (hf_lp[~real] == 0).all()
    # hidden states where a real token is predicted (the value head reads them)
    torch.testing.assert_close(lean_h[real], hf_h[real], **TOL)


def test_gradients_match_hf(model):
    p, pm, c, cm = _batch(1)
    weights = torch.randn(c.shape, generator=torch.Generator().manual_seed(2))

    def grads():
        model.zero_grad(set_to_none=True)
        lp, h = sequence_logprobs(model, p, pm, c, cm, return_hidden=True)
        ((lp * weights * cm).sum() + (h[cm.bool()] ** 2).mean()).backward()
        return {n: q.grad.clone() for n, q in model.named_parameters()}

    lean = grads()
    with through_hf(model):
        hf = grads()
    model.zero_grad(set_to_none=True)
    for name in hf:
        torch.testing.assert_close(lean[name], hf[name], **TOL, msg=name)


def test_incremental_decoding_matches_hf_with_holes_and_cache_growth(model):
    p, pm, c, cm = _batch(3)
    active = torch.rand(c.shape, generator=torch.Generator().manual_seed(4)) > 0.3

    def decode(max_new_tokens):
        lm = IncrementalLM(model, max_new_tokens=max_new_tokens)
        out = [lm.prefill(p, pm)]
        for t in range(c.shape[1]):
            out.append(lm.step(c[:, t], active[:, t]))
        return torch.stack(out, 1)

    grown = decode(2)  # room for 2 steps, grown on the 3rd
    sized = decode(c.shape[1])
    with through_hf(model):
        hf = decode(c.shape[1])
    torch.testing.assert_close(sized, hf, **TOL)
    torch.testing.assert_close(grown, sized, rtol=0, atol=0)


def test_prefill_all_positions_keeps_every_column(model):
    p, pm, _, _ = _batch(5)
    with torch.no_grad():
        lean = IncrementalLM(model).prefill(p, pm, all_positions=True)
        with through_hf(model):
            hf = IncrementalLM(model).prefill(p, pm, all_positions=True)
    assert lean.shape == hf.shape == (*p.shape, 2000)
    real = pm.bool()
    torch.testing.assert_close(lean[real], hf[real], **TOL)


def test_generate_draws_the_same_tokens(model):
    p, pm, _, _ = _batch(6)
    cfg = SamplingConfig(0.9, top_k=100)

    def draw():
        g = torch.Generator().manual_seed(7)
        return generate(model, p, pm, 12, cfg, eos_token_id=0, generator=g)

    lean = draw()
    with through_hf(model):
        hf = draw()
    assert torch.equal(lean.tokens, hf.tokens) and torch.equal(lean.mask, hf.mask)
    torch.testing.assert_close(lean.logprobs, hf.logprobs, **TOL)


def test_trim_left_padding_drops_only_all_padding_columns():
    ids = torch.arange(12).view(3, 4)
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1]])
    t_ids, t_mask = trim_left_padding(ids, mask)
    assert torch.equal(t_ids, ids[:, 1:]) and torch.equal(t_mask, mask[:, 1:])
    full = torch.ones_like(mask)
    assert trim_left_padding(ids, full)[0] is ids
    empty = torch.zeros_like(mask)  # nothing real: nothing to align on, kept as is
    assert trim_left_padding(ids, empty)[1] is empty


def test_sample_loop_drops_stopped_rows_without_changing_the_others(model):
    p, pm, _, _ = _batch(8)
    ends = torch.tensor([3, 10, 1, 7, 10, 5])  # the step after which each row stops

    def run():
        seen = []

        def on_token(t, tokens, token_lp, _):
            seen.append((tokens.clone(), token_lp.clone()))
            return t + 1 < ends

        g = torch.Generator().manual_seed(9)
        steps = sample_loop(model, p, pm, 12, SamplingConfig(), on_token, generator=g)
        tokens = torch.stack([s[0] for s in seen], 1)
        lps = torch.stack([s[1] for s in seen], 1)
        live = torch.arange(tokens.shape[1])[None, :] < ends[:, None]
        return steps, tokens[live], lps[live]

    steps, tokens, lps = run()
    with through_hf(model):  # carries stopped rows masked instead
        hf_steps, hf_tokens, hf_lps = run()
    assert steps == hf_steps == 10
    assert torch.equal(tokens, hf_tokens)
    torch.testing.assert_close(lps, hf_lps, **TOL)


def test_sample_loop_refuses_a_stopped_row_going_on_again(model):
    p, pm, _, _ = _batch(10)

    def on_token(t, tokens, *_):
        alive = torch.ones(tokens.shape[0], dtype=torch.bool)
        alive[0] = t != 1  # row 0 stops after step 1 and would go on after step 2
        return alive

    with pytest.raises(ValueError, match="stopped row go on again at step 2"):
        sample_loop(model, p, pm, 6, SamplingConfig(), on_token)


def test_classifier_logits_lean_path_matches_hf_padded_and_not():
    """A GPT-2 reward model's trunk runs lean (score head at the last position): the same logits
    as Hugging Face's forward, over left-padded rows and unpadded ones, with gradients; an
    all-padding row, a hooked model or dropout take Hugging Face's path."""
    torch.manual_seed(5)
    config = GPT2Config(
        n_embd=64, n_layer=2, n_head=4, vocab_size=300, num_labels=1,
        bos_token_id=299, eos_token_id=299, pad_token_id=299,
    )  # fmt: skip
    rm = GPT2ForSequenceClassification(config)
    rm.train(False)
    assert lean_gpt2.supports_classifier(rm) and not lean_gpt2.supports(rm)
    g = torch.Generator().manual_seed(3)
    rows = [torch.randint(1, 300, (n,), generator=g).tolist() for n in (7, 1, 12, 4)]
    padded = left_pad(rows, 0)
    unpadded = left_pad([r[:4] for r in rows if len(r) >= 4], 0)
    for ids, mask in (padded, unpadded):
        lean = classifier_logits_left_padded(rm, ids, mask)
        with through_hf(rm):
            assert not lean_gpt2.supports_classifier(rm)
            hf = classifier_logits_left_padded(rm, ids, mask)
        torch.testing.assert_close(lean, hf, **TOL)
        # each row alone (no padding) gives its batched score: read at its own last token
        alone = torch.cat([classifier_logits_left_padded(rm, i[m.bool()][None], m[m.bool()][None])
                           for i, m in zip(ids, mask)])  # fmt: skip
        torch.testing.assert_close(lean, alone, **TOL)
    lean.sum().backward()  # gradients flow through the lean path too
    assert rm.score.weight.grad is not None
    ids, mask = left_pad([[5, 6], []], 0)  # the empty row is all padding: Hugging Face's path
    with through_hf(rm):
        hf = classifier_logits_left_padded(rm, ids, mask)
    torch.testing.assert_close(classifier_logits_left_padded(rm, ids, mask), hf, rtol=0, atol=0)
    rm.train(True)
    assert not lean_gpt2.supports_classifier(rm)  # dropout active
    rm.train(False)
    lm = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64))
    assert not lean_gpt2.supports_classifier(lm)


def test_left_pad_layout():
    ids, mask = left_pad([[1, 2, 3], [4], [], (7, 8)], 9)
    assert ids.tolist() == [[1, 2, 3], [9, 9, 4], [9, 9, 9], [9, 7, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0], [0, 1, 1]]
    assert ids.dtype == mask.dtype == torch.long
    assert left_pad([[], []], 0)[0].shape == (2, 0)
    arr_ids, arr_mask = left_pad_arrays([[1, 2, 3], [4], [], (7, 8)], 9)  # the numpy half
    assert arr_ids.dtype == np.int64 and arr_mask.dtype == bool
    assert arr_ids.tolist() == ids.tolist() and arr_mask.tolist() == mask.bool().tolist()
    with pytest.raises(ValueError, match="at least one row"):
        left_pad([], 0)
