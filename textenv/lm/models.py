"""Loading language models, tokenizers and reward models from JSON-friendly *spec strings*.

A spec names a model without holding it, so env kwargs stay JSON-serialisable:

========================================  ===============================================
spec                                      meaning
========================================  ===============================================
``"tiny"`` / ``"tiny:layers=2,width=64"``  a tiny GPT-2 causal LM built from config (tests)
``"tiny-rm"`` / ``"tiny-rm:seed=1"``       a tiny GPT-2 sequence classifier (one label)
``"builtin:prose"``                       a model folder shipped inside the package
``"/path/to/folder"`` / ``"./folder"``    a ``save_pretrained`` folder on disk
``"gpt2"`` / ``"org/name"``               a Hugging Face hub name (needs network)
``"package.module:function"``             (reward specs only) a Python callable
========================================  ===============================================

Frozen models (the reference LM, the reward model) are cached per process, keyed by
``(kind, spec, device, dtype)``, so B envs made with ``gym.make`` share one copy. The cache is
bounded (least recently used out past :data:`MODEL_CACHE_MAX_ENTRIES` entries or
:data:`MODEL_CACHE_MAX_BYTES` of weights), and a local folder whose files changed (a retrained
reward model) replaces its old entry instead of adding one.
Trainable policies are loaded with :func:`load_causal_lm` (``frozen=False``) and never cached.

A spec that looks like a local path (``/…``, ``./…``, ``~/…``, more than one ``/``, or
``dir/name`` where ``dir`` exists here) and does not exist fails at once; a hub name that is
neither in the local Hugging Face cache nor reachable fails after one quick look-up instead of
minutes of download retries.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import huggingface_hub
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

from textenv.lm.tokens import EOS_TOKEN

__all__ = [
    "ModelLoadError",
    "BUILTIN_MODELS_DIR",
    "EOS_TOKEN",
    "byte_tokenizer",
    "parse_tiny_spec",
    "resolve_dtype",
    "load_tokenizer",
    "same_tokenizer",
    "load_causal_lm",
    "load_frozen_causal_lm",
    "load_sequence_classifier",
    "import_callable",
    "is_callable_spec",
    "check_vocab",
    "clear_cache",
    "model_cache_size",
    "cache_kwarg",
    "cached_frozen",
    "output_cache",
    "MODEL_CACHE_MAX_ENTRIES",
    "MODEL_CACHE_MAX_BYTES",
]

BUILTIN_MODELS_DIR = Path(__file__).resolve().parents[1] / "data" / "models"

TINY_DEFAULTS: dict[str, int] = {
    "layers": 2,
    "width": 64,
    "heads": 2,
    "vocab": 0,  # 0 = the byte tokenizer's size (257)
    "positions": 256,
    "seed": 0,
}


class ModelLoadError(ValueError):
    """A model spec could not be turned into a model (missing path, wrong kind, bad spec)."""


# --------------------------------------------------------------------------- helpers


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``"float32"`` / ``"bfloat16"`` / ``torch.float16`` … → a torch dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16', 'float16'")
    return value


def cache_kwarg(model: torch.nn.Module) -> str:
    """Name of the KV-cache argument of ``model.forward``.

    transformers 5.x renamed ``past_key_values`` to ``cache``; passing the old name warns.
    """
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def output_cache(output: Any) -> Any:
    """The KV cache returned by a forward, under either name."""
    if "cache" in output:
        return output["cache"]
    return output["past_key_values"]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable-character map (the ByteLevel alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """An offline byte-level tokenizer: 256 byte symbols + ``<|endoftext|>`` (id 256).

    Built from the GPT-2 byte alphabet with no merges and token id = byte value, so it needs
    no download and can encode any text. Used by the tiny test models.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {symbol: byte for byte, symbol in _bytes_to_unicode().items()}  # id = byte value
    vocab[EOS_TOKEN] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS_TOKEN])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN, bos_token=EOS_TOKEN
    )


def parse_tiny_spec(spec: str) -> tuple[str, dict[str, int]]:
    """``"tiny-rm:layers=1,seed=3"`` → ``("tiny-rm", {...defaults updated...})``."""
    kind, _, rest = spec.partition(":")
    if kind not in ("tiny", "tiny-rm"):
        raise ModelLoadError(f"not a tiny spec: {spec!r}")
    params = dict(TINY_DEFAULTS)
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in params:
            raise ModelLoadError(
                f"bad tiny spec {spec!r}: expected comma-separated key=value with keys "
                f"{sorted(params)}, got {item!r}"
            )
        try:
            params[key] = int(value)
        except ValueError as exc:
            raise ModelLoadError(f"bad tiny spec {spec!r}: {key} must be an integer") from exc
    return kind, params


def _tiny_config(params: dict[str, int], vocab_size: int, eos_id: int) -> GPT2Config:
    return GPT2Config(
        vocab_size=params["vocab"] or vocab_size,
        n_positions=params["positions"],
        n_embd=params["width"],
        n_layer=params["layers"],
        n_head=params["heads"],
        activation_function="gelu_pytorch_tanh",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        num_labels=1,
    )


def _build_tiny(spec: str) -> PreTrainedModel:
    kind, params = parse_tiny_spec(spec)
    tokenizer = byte_tokenizer()
    config = _tiny_config(params, len(tokenizer), tokenizer.eos_token_id)
    # The same spec must give the same weights in every process, whatever the global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params["seed"])
        cls = GPT2LMHeadModel if kind == "tiny" else GPT2ForSequenceClassification
        model = cls(config)
    return model


def _resolve_folder(spec: str) -> Path | None:
    """Local folder of a spec, ``None`` for a hub name; raises for a missing local path."""
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        folder = BUILTIN_MODELS_DIR / name
        if not folder.is_dir():
            available = sorted(p.name for p in BUILTIN_MODELS_DIR.glob("*") if p.is_dir())
            raise ModelLoadError(
                f"no built-in model {name!r} (looked in {folder}); available: {available}"
            )
        return folder
    path = Path(os.path.expanduser(spec))
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(
                f"model path {spec!r} is a file; expected a save_pretrained folder"
            )
        return path
    parts = spec.replace(os.sep, "/").split("/")
    local_looking = (
        spec.startswith(("/", ".", "~"))
        or (os.altsep is not None and os.altsep in spec)
        or len(parts) > 2
        or (len(parts) == 2 and Path(parts[0]).is_dir())
        or not _HUB_ID.match(spec)
    )
    if local_looking:
        raise ModelLoadError(f"model path {spec!r} does not exist{_nearest_existing(path)}")
    _check_hub_name(spec)
    return None


# A Hugging Face repo id: "name" or "org/name".
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def _nearest_existing(path: Path) -> str:
    """``" (… exists; it holds …)"``: where a mistyped path stops matching the disk."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    entries = sorted(p.name for p in parent.iterdir())[:8] if parent.is_dir() else []
    return f" (the nearest existing folder is {str(parent)!r}, holding {entries})"


def _offline() -> bool:
    return any(
        os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _check_hub_name(spec: str) -> None:
    """A hub name must be in the local HF cache or answer one quick look-up: a missing path
    taken for a hub name otherwise spends minutes in download retries."""
    if isinstance(huggingface_hub.try_to_load_from_cache(spec, "config.json"), str):
        return
    if _offline():
        raise ModelLoadError(
            f"{spec!r} is neither a local folder nor in the local Hugging Face cache, and the hub "
            "is offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE); for a local model pass its "
            "folder's path"
        )
    try:
        huggingface_hub.model_info(spec, timeout=10)
    except huggingface_hub.errors.RepositoryNotFoundError as exc:
        raise ModelLoadError(
            f"{spec!r} is neither a local folder nor a model on the Hugging Face hub ({exc})"
        ) from None
    except Exception as exc:  # no network: DNS, connection or timeout errors of the HTTP client
        raise ModelLoadError(
            f"{spec!r} is not a local folder, and the Hugging Face hub could not be reached to "
            f"look it up as a hub name ({type(exc).__name__}: {exc})"
        ) from None


def _from_pretrained(cls: Any, spec: str, what: str, **kwargs: Any) -> Any:
    folder = _resolve_folder(spec)
    source = str(folder) if folder is not None else spec
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-load "Loading weights" bar is noise in env code
    try:
        return cls.from_pretrained(source, local_files_only=folder is not None, **kwargs)
    except (OSError, ValueError) as exc:
        where = f"folder {source!r}" if folder is not None else f"hub name {spec!r}"
        raise ModelLoadError(f"could not load a {what} from {where}: {exc}") from exc
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()


def is_callable_spec(spec: str) -> bool:
    """``"package.module:function"`` (and not a tiny/builtin spec or a Windows path)."""
    if ":" not in spec or spec.startswith(("tiny", "builtin:")):
        return False
    module, _, attr = spec.partition(":")
    return bool(module) and bool(attr) and all(p.isidentifier() for p in module.split("."))


def import_callable(spec: str) -> Any:
    """Import ``"package.module:attr"``; a clear error if either part is missing."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(
            f"cannot import module {module_name!r} of spec {spec!r}: {exc}"
        ) from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelLoadError(
                f"module {module_name!r} has no attribute {attr!r} (spec {spec!r})"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelLoadError(f"{spec!r} is not callable")
    return obj


# --------------------------------------------------------------------------- public loaders

# Past either bound the least recently used models are dropped (envs using them keep them).
MODEL_CACHE_MAX_ENTRIES = 32
MODEL_CACHE_MAX_BYTES = int(os.environ.get("TEXTENV_MODEL_CACHE_BYTES", 8 * 2**30))

# (kind, spec, device, dtype) → (folder version, object, bytes of weights)
_CACHE: OrderedDict[tuple[str, str, str, str], tuple[str, Any, int]] = OrderedDict()
_CACHE_LOCK = threading.RLock()


def clear_cache() -> None:
    """Forget every cached frozen model (tests use this; models in use stay alive)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def model_cache_size() -> int:
    return len(_CACHE)


def _folder_key(spec: str) -> tuple[str, str]:
    """``(cache name, version)``: a local folder by its real path and its files' latest mtime,
    so a retrained folder replaces its cached model instead of being served stale."""
    path = Path(os.path.expanduser(spec)) if not spec.startswith(("tiny", "builtin:")) else None
    if path is None or not path.is_dir():
        return spec, ""
    files = [f.stat().st_mtime_ns for f in path.iterdir() if f.is_file()]
    return os.path.realpath(path), str(max(files, default=0)) + f"/{len(files)}"


def _weight_bytes(obj: Any) -> int:
    module = obj if isinstance(obj, torch.nn.Module) else getattr(obj, "model", None)
    if not isinstance(module, torch.nn.Module):
        return 0
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def cached_frozen(kind: str, spec: str, device: str, dtype: torch.dtype, build: Any) -> Any:
    """``build()`` once per ``(kind, spec, device, dtype)`` in this process; shared after."""
    name, version = _folder_key(spec)
    key = (kind, name, str(torch.device(device)), str(dtype))
    with _CACHE_LOCK:
        entry = _CACHE.get(key)
        if entry is not None and entry[0] == version:
            _CACHE.move_to_end(key)
            return entry[1]
        obj = build()
        _CACHE[key] = (version, obj, _weight_bytes(obj))  # replaces an older version
        _CACHE.move_to_end(key)
        total = sum(e[2] for e in _CACHE.values())
        while len(_CACHE) > 1 and (
            len(_CACHE) > MODEL_CACHE_MAX_ENTRIES or total > MODEL_CACHE_MAX_BYTES
        ):
            _, (_, _, nbytes) = _CACHE.popitem(last=False)
            total -= nbytes
        return obj


def load_tokenizer(spec: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a model spec, with a pad token (EOS when it has none) and left padding."""

    def build() -> PreTrainedTokenizerBase:
        if spec.startswith("tiny"):
            parse_tiny_spec(spec)
            tok = byte_tokenizer()
        else:
            from transformers import AutoTokenizer

            tok = _from_pretrained(AutoTokenizer, spec, "tokenizer")
        if tok.eos_token_id is None:
            raise ModelLoadError(f"tokenizer of {spec!r} has no EOS token; the env needs one")
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        return tok

    return cached_frozen("tokenizer", spec, "cpu", torch.float32, build)


def _definition(backend: Any) -> dict[str, Any]:
    """A fast tokenizer's definition without its current truncation / padding settings."""
    definition = json.loads(backend.to_str())
    definition.pop("truncation", None)
    definition.pop("padding", None)
    return definition


def same_tokenizer(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """Whether ``a`` and ``b`` turn text into the same ids and back (then a model of one can read
    the other's ids as they are). Fast tokenizers are compared by their full definition
    (vocabulary, merges, normalisation, pre-tokenisation), others by vocabulary; the special
    tokens must agree in both cases."""
    if a is b:
        return True
    if (a.eos_token_id, a.pad_token_id, len(a)) != (b.eos_token_id, b.pad_token_id, len(b)):
        return False
    backend_a, backend_b = (
        getattr(a, "backend_tokenizer", None),
        getattr(b, "backend_tokenizer", None),
    )
    if backend_a is not None and backend_b is not None:
        return _definition(backend_a) == _definition(backend_b)
    return type(a) is type(b) and a.get_vocab() == b.get_vocab()


def check_vocab(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, spec: str) -> None:
    """The model must have a logit for every token id the tokenizer can produce."""
    vocab = model.get_output_embeddings().weight.shape[0] if model.get_output_embeddings() else None
    vocab = vocab or model.config.vocab_size
    if len(tokenizer) > vocab:
        raise ModelLoadError(
            f"vocabulary mismatch for {spec!r}: the tokenizer has {len(tokenizer)} tokens but the "
            f"model only {vocab} logits"
        )


def load_causal_lm(
    spec: str,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    *,
    frozen: bool = False,
) -> PreTrainedModel:
    """A causal LM from a spec. ``frozen=False`` returns a fresh trainable copy (never cached)."""
    if frozen:
        return load_frozen_causal_lm(spec, device, dtype)
    torch_dtype = resolve_dtype(dtype)
    if spec.startswith("tiny"):
        if parse_tiny_spec(spec)[0] != "tiny":
            raise ModelLoadError(f"{spec!r} is a reward-model spec, not a causal LM")
        model = _build_tiny(spec)
    else:
        model = _from_pretrained(AutoModelForCausalLM, spec, "causal LM")
    if not hasattr(model, "get_output_embeddings") or model.get_output_embeddings() is None:
        raise ModelLoadError(f"{spec!r} is not a causal LM (it has no LM head)")
    check_vocab(model, load_tokenizer(spec), spec)
    model.to(device=device, dtype=torch_dtype)
    model.eval()  # no dropout, in rollouts or in updates (RLHF implementation details)
    return model


def _freeze(model: PreTrainedModel) -> PreTrainedModel:
    model.eval()
    model.requires_grad_(False)
    return model


def load_frozen_causal_lm(
    spec: str, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None
) -> PreTrainedModel:
    """A frozen, process-wide shared causal LM (the reference policy)."""
    torch_dtype = resolve_dtype(dtype)
    return cached_frozen(
        "causal_lm",
        spec,
        str(device),
        torch_dtype,
        lambda: _freeze(load_causal_lm(spec, device, torch_dtype)),
    )


def load_sequence_classifier(
    spec: str, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None
) -> PreTrainedModel:
    """A frozen, shared ``AutoModelForSequenceClassification`` with exactly one label."""
    torch_dtype = resolve_dtype(dtype)

    def build() -> PreTrainedModel:
        if spec.startswith("tiny"):
            if parse_tiny_spec(spec)[0] != "tiny-rm":
                raise ModelLoadError(
                    f"{spec!r} is a causal-LM spec; a reward model needs 'tiny-rm'"
                )
            model = _build_tiny(spec)
        else:
            model = _from_pretrained(AutoModelForSequenceClassification, spec, "reward model")
        if model.config.pad_token_id is None:
            # Batched scoring finds each row's last token through the pad id; a config saved
            # without one (many hub RMs) takes the tokenizer's (EOS when it has none).
            model.config.pad_token_id = load_tokenizer(spec).pad_token_id
        if getattr(model.config, "num_labels", None) != 1:
            raise ModelLoadError(
                f"reward model {spec!r} must have exactly one output label, "
                f"has {getattr(model.config, 'num_labels', None)}"
            )
        model.to(device=device, dtype=torch_dtype)
        return _freeze(model)

    return cached_frozen("reward_model", spec, str(device), torch_dtype, build)
