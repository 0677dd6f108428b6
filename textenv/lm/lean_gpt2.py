"""A lean forward for GPT-2 language models: Hugging Face's math without its per-call overhead.

The models this package trains are small (the shipped ones: 2 layers × 128), so a forward's
cost on a CPU is mostly per-call overhead (building attention masks, cache objects, output
records, module dispatch), not arithmetic. :func:`lean_forward` runs the same ops in the same
order as ``GPT2LMHeadModel.forward`` with SDPA attention — the same ``addmm`` / ``layer_norm`` /
``scaled_dot_product_attention`` calls on the same weights, the same boolean mask (``None`` with
``is_causal`` when no row is padded) — so its logits equal Hugging Face's to float rounding
(tests/test_lean_gpt2.py holds them within 1e-5), it works under autograd and autocast like the
model itself, and :class:`KVCache` keeps keys and values in preallocated tensors (one column
written per step) instead of concatenating a new cache every step.

:func:`supports` says when it applies: a plain ``GPT2LMHeadModel`` with SDPA attention, no
cross-attention, no dropout active, no gradient checkpointing, and no forward hooks anywhere
(hooks must see the calls they were registered for). Every other model goes through its own
``forward`` (the callers in :mod:`textenv.lm.sampling` fall back). :func:`supports_classifier`
says the same of a ``GPT2ForSequenceClassification``, whose trunk runs here and whose ``score``
head :func:`textenv.lm.padding.classifier_logits_left_padded` applies at the last position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules import module as _module
from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel

__all__ = ["supports", "supports_classifier", "lean_forward", "KVCache"]


def _inert(hook: object) -> bool:
    """Hugging Face's output-capturing hooks (installed on the first ``output_hidden_states``
    call, for good) do nothing unless that model call is collecting outputs."""
    name = getattr(hook, "__qualname__", "")
    return name.startswith(("install_output_capuring_hook.", "install_output_capturing_hook."))


def _has_hooks(model: torch.nn.Module) -> bool:
    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        return True
    for m in model.modules():
        if m._forward_pre_hooks or any(not _inert(h) for h in m._forward_hooks.values()):
            return True
    return False


def supports(model: torch.nn.Module) -> bool:
    """Whether :func:`lean_forward` computes exactly what ``model(...)`` would."""
    if type(model) is not GPT2LMHeadModel or model.lm_head.bias is not None:
        return False
    return _plain_trunk(model)


def supports_classifier(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a GPT-2 sequence classifier whose trunk :func:`lean_forward` runs
    exactly (``head=False``), its ``score`` head then applied by the caller."""
    if type(model) is not GPT2ForSequenceClassification or model.score.bias is not None:
        return False
    return _plain_trunk(model)


def _plain_trunk(model: GPT2LMHeadModel | GPT2ForSequenceClassification) -> bool:
    cfg = model.config
    if getattr(cfg, "_attn_implementation", None) != "sdpa" or cfg.add_cross_attention:
        return False
    if model.training and (
        cfg.attn_pdrop
        or cfg.resid_pdrop
        or cfg.embd_pdrop
        or model.transformer.gradient_checkpointing
    ):
        return False
    return not _has_hooks(model)


class KVCache:
    """Keys and values of every layer in ``(B, heads, capacity, head_dim)`` tensors, allocated
    on the first write (in the dtype the keys come in, e.g. under autocast) and grown by
    doubling when full; ``length`` columns are filled. ``mask`` ``(B, capacity)`` marks the
    columns that are attended."""

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = int(capacity)
        self.length = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.mask = torch.empty(0, 0, dtype=torch.bool)

    def _reserve(self, model: GPT2LMHeadModel, like: torch.Tensor, batch: int, new: int) -> None:
        """Make room for ``new`` more columns."""
        need = self.length + new
        if self.keys and need <= self.keys[0].shape[2]:
            return
        cfg = model.config
        cap = max(self.capacity, need, 2 * (self.keys[0].shape[2] if self.keys else 0))
        shape = (batch, cfg.n_head, cap, cfg.n_embd // cfg.n_head)
        keys = [like.new_empty(shape) for _ in range(cfg.n_layer)]
        values = [like.new_empty(shape) for _ in range(cfg.n_layer)]
        mask = torch.zeros(batch, cap, dtype=torch.bool, device=like.device)
        if self.length:
            for old, fresh in zip(self.keys + self.values, keys + values):
                fresh[:, :, : self.length] = old[:, :, : self.length]
            mask[:, : self.length] = self.mask[:, : self.length]
        self.keys, self.values, self.mask = keys, values, mask

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (indices) of the batch."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]
        self.mask = self.mask.index_select(0, rows)

    def append(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this call's keys / values of ``layer`` after the filled columns; returns all
        of them (views)."""
        end = self.length + k.shape[2]
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


def _attention_mask(
    key_mask: torch.Tensor, q_len: int, causal: bool
) -> tuple[torch.Tensor | None, bool]:
    """Hugging Face's SDPA mask for a left-padded batch: ``None`` + ``is_causal`` when no key
    is padded (and ``q_len > 1``), else a bool ``(B, 1, Q, K)``: key k seen by query q iff k is
    real and (causally) k ≤ q's column. A padding query sees nothing, as there."""
    k_len = key_mask.shape[1]
    if bool(key_mask.all()):
        if q_len == 1:
            return None, False
        if causal and q_len == k_len:
            return None, True
    allowed = key_mask[:, None, None, :]
    if causal and q_len > 1:
        cols = torch.arange(k_len, device=key_mask.device)
        rows = cols[k_len - q_len :, None]
        allowed = allowed & (cols[None, :] <= rows)[None, None]
    return allowed, False


def lean_forward(
    model: GPT2LMHeadModel | GPT2ForSequenceClassification,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    *,
    logits_to_keep: int = 0,
    cache: KVCache | None = None,
    head: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """``(logits, last_hidden)`` of ``model`` over ``input_ids`` ``(B, T)``.

    ``attention_mask`` ``(B, T)`` marks the real tokens of this call's columns; with ``cache``
    the new columns are appended to it (their keys and values written in place, the new tokens
    attend to every earlier real column). ``logits_to_keep`` > 0 computes the LM head over the
    last that many positions only; ``head=False`` skips it (``logits`` is None: the caller
    applies the head to the positions it needs; the only choice for a sequence classifier).
    ``last_hidden`` is over all T positions (after ``ln_f``).
    """
    cfg = model.config
    tr = model.transformer
    B, T = input_ids.shape
    H = cfg.n_embd
    n_head = cfg.n_head
    head_dim = H // n_head
    if cache is not None:
        cache._reserve(model, tr.wte.weight, B, T)
        start, end = cache.length, cache.length + T
        cache.mask[:, start:end] = attention_mask.bool()
        key_mask = cache.mask[:, :end]
    else:
        key_mask = attention_mask.bool()
    mask, is_causal = _attention_mask(key_mask, T, causal=True)
    # Without a cache, the per-token work (layer norms, projections, MLP) runs over the real
    # tokens only, packed (K, H); only attention sees the padded (B, T) layout.
    packed = cache is None and mask is not None
    if packed:
        real = attention_mask.reshape(-1).nonzero().squeeze(1)
        ids, pos = input_ids.reshape(-1)[real], position_ids.reshape(-1)[real]
    else:
        ids, pos = input_ids, position_ids
    hidden = F.embedding(ids, tr.wte.weight) + F.embedding(pos, tr.wpe.weight)
    for i, block in enumerate(tr.h):
        attn = block.attn
        ln = block.ln_1
        x = F.layer_norm(hidden, (H,), ln.weight, ln.bias, ln.eps)
        qkv = torch.addmm(attn.c_attn.bias, x.view(-1, H), attn.c_attn.weight)
        if packed:
            qkv = qkv.new_zeros(B * T, 3 * H).index_copy(0, real, qkv)
        q, k, v = qkv.view(B, T, 3 * H).split(H, dim=2)
        q = q.view(B, T, n_head, head_dim).transpose(1, 2)
        k = k.view(B, T, n_head, head_dim).transpose(1, 2)
        v = v.view(B, T, n_head, head_dim).transpose(1, 2)
        if cache is not None:
            k, v = cache.append(i, k, v)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=0.0, scale=attn.scaling, is_causal=is_causal
        )
        out = out.transpose(1, 2).reshape(B * T, H).contiguous()
        if packed:
            out = out.index_select(0, real)
        out = torch.addmm(attn.c_proj.bias, out, attn.c_proj.weight)
        hidden = out.view(hidden.shape) + hidden
        mlp, ln = block.mlp, block.ln_2
        x = F.layer_norm(hidden, (H,), ln.weight, ln.bias, ln.eps)
        x = torch.addmm(mlp.c_fc.bias, x.view(-1, H), mlp.c_fc.weight)
        x = mlp.act.forward(x)
        x = torch.addmm(mlp.c_proj.bias, x, mlp.c_proj.weight)
        hidden = hidden + x.view(hidden.shape)
    if cache is not None:
        cache.length = end
    ln = tr.ln_f
    hidden = F.layer_norm(hidden, (H,), ln.weight, ln.bias, ln.eps)
    if packed:  # back to (B, T, H), zeros at padding
        hidden = hidden.new_zeros(B * T, H).index_copy(0, real, hidden).view(B, T, H)
    if not head:
        return None, hidden
    kept = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
    return F.linear(kept, model.lm_head.weight), hidden
