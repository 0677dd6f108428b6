"""textenv.rewards.base by hand: the sequence-classifier wrapper (scores, normalisation,
truncation, batching, the token-id path), load_reward's kinds, and the checks of what reward
callables are and return.

Fast (tiny models, no env): these are also the tests the "rewards" mutation set runs.
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from bos_tokenizer import bos_byte_tokenizer

from textenv.lm.models import load_sequence_classifier, load_tokenizer
from textenv.rewards import (
    REWARD_SIGNATURE,
    RewardModelError,
    SequenceClassifierReward,
    check_reward_callable,
    check_scores,
    check_user_reward,
    load_reward,
    score,
)
from textenv.rewards.fused import FusedRewardHead
from textenv.training.reward_model import _Encoder, _score_all

pytestmark = pytest.mark.usefixtures("one_thread")

RM = "tiny-rm"


def _rm_copy(**config) -> torch.nn.Module:
    """A private copy of the tiny RM (the loaded one is shared), with config attributes set."""
    model = copy.deepcopy(load_sequence_classifier(RM))
    for k, v in config.items():
        setattr(model.config, k, v)
    return model


def _raw_score(model: torch.nn.Module, ids: list[int]) -> float:
    """The tiny GPT-2 classifier's one logit for one unpadded row read at its last token,
    computed here from its trunk and score head (not through its own pooling)."""
    with torch.no_grad():
        hidden = model.transformer(input_ids=torch.tensor([ids])).last_hidden_state
        return float(model.score(hidden[0, -1])[0])


def test_scores_are_the_models_logit_of_prompt_plus_completion_normalised():
    model = _rm_copy(reward_mean=0.25, reward_std=4.0)
    tok = load_tokenizer(RM)
    rm = SequenceClassifierReward(model, tok)
    assert (rm.mean, rm.std) == (0.25, 4.0)
    prompts, completions = ["The cat", "A", "xyz"], [" sat down", "bc long text", ""]
    got = rm(prompts, completions, [{}] * 3)
    assert isinstance(got, np.ndarray) and got.shape == (3,)
    want = [
        (_raw_score(model, list((p + c).encode())) - 0.25) / 4.0
        for p, c in zip(prompts, completions)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Prompt and completion are joined in that order: swapping them scores another text.
    swapped = rm(completions[:1], prompts[:1], [{}])
    assert abs(swapped[0] - got[0]) > 1e-4


def test_normalisation_defaults_and_zero_std():
    plain = SequenceClassifierReward(_rm_copy(), load_tokenizer(RM))
    assert (plain.mean, plain.std) == (0.0, 1.0)
    # No stored statistics (None) or a zero std: scores are left as they are (std 1).
    rm = SequenceClassifierReward(_rm_copy(reward_mean=None, reward_std=0.0), load_tokenizer(RM))
    assert (rm.mean, rm.std) == (0.0, 1.0)
    assert isinstance(rm.mean, float) and isinstance(rm.std, float)
    got = rm(["ab"], ["cd"], [{}])
    assert got[0] == pytest.approx(_raw_score(rm.model, list(b"abcd")), rel=1e-5, abs=1e-6)


def test_max_length_is_capped_by_the_models_positions_and_truncates_on_the_left():
    model = _rm_copy()
    positions = model.config.n_positions
    tok = load_tokenizer(RM)
    assert SequenceClassifierReward(model, tok).max_length == min(512, positions)
    assert SequenceClassifierReward(model, tok, max_length=10 * positions).max_length == positions
    rm = SequenceClassifierReward(model, tok, max_length=6)
    assert rm.max_length == 6 and rm.tokenizer.truncation_side == "left"
    # A text over max_length keeps its end (the completion), not its start.
    got = rm(["0123456789"], ["abc"], [{}])
    assert got[0] == pytest.approx(_raw_score(model, list(b"789abc")), rel=1e-5, abs=1e-6)
    # The token-id path truncates the same way.
    ids = rm.score_token_ids([list(b"0123456789")], [list(b"abc")], [{}])
    assert ids[0] == pytest.approx(got[0], rel=1e-5, abs=1e-6)


def test_no_position_limit_keeps_max_length():
    tok = load_tokenizer(RM)

    def limit(**config) -> int:  # only the config is read when the wrapper is built
        return SequenceClassifierReward(SimpleNamespace(config=SimpleNamespace(**config)), tok, max_length=70).max_length  # fmt: skip

    assert limit() == 70
    defaults = SequenceClassifierReward(SimpleNamespace(config=SimpleNamespace(n_positions=1024)), tok)  # fmt: skip
    assert (defaults.max_length, defaults.batch_size) == (512, 256)
    assert limit(n_positions=None, max_position_embeddings=None) == 70
    assert limit(max_position_embeddings=9) == 9  # a config that names it so
    assert limit(n_positions=None, max_position_embeddings=9) == 9
    assert limit(n_positions=12, max_position_embeddings=9) == 12
    assert limit(n_positions=100) == 70


def test_batches_of_batch_size_rows_in_order():
    model = _rm_copy()
    tok = load_tokenizer(RM)
    prompts = ["a", "bb", "ccc", "dddd", "e"]
    completions = ["1", "22", "", "4444", "55555"]
    whole = SequenceClassifierReward(model, tok)(prompts, completions, [{}] * 5)
    rm = SequenceClassifierReward(model, tok, batch_size=2)
    assert rm.calls == 0
    got = rm(prompts, completions, [{}] * 5)
    assert rm.calls == 3  # rows 0-1, 2-3, 4
    np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-6)
    want = [_raw_score(model, list((p + c).encode())) for p, c in zip(prompts, completions)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    ids = rm.score_token_ids([list(p.encode()) for p in prompts], [list(c.encode()) for c in completions], [{}] * 5)  # fmt: skip
    assert rm.calls == 6
    np.testing.assert_allclose(ids, want, rtol=1e-5, atol=1e-6)


def test_token_id_path_scores_the_joined_ids_and_an_empty_row_as_eos():
    model = _rm_copy(reward_mean=1.0, reward_std=2.0)
    rm = SequenceClassifierReward(model, load_tokenizer(RM))
    eos = rm.tokenizer.eos_token_id
    got = rm.score_token_ids([[104, 105], [], []], [[33], [120, 121], []], [{}] * 3)
    want = [
        (_raw_score(model, [104, 105, 33]) - 1.0) / 2.0,
        (_raw_score(model, [120, 121]) - 1.0) / 2.0,
        (_raw_score(model, [eos]) - 1.0) / 2.0,
    ]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The text path gives the empty text the same one token.
    assert rm([""], [""], [{}])[0] == pytest.approx(want[2], rel=1e-5, abs=1e-6)


def test_reads_token_ids_only_of_its_own_tokenizer_without_special_tokens():
    model = _rm_copy()
    rm = SequenceClassifierReward(model, load_tokenizer(RM))
    assert rm.reads_token_ids(load_tokenizer("tiny"))  # the same byte tokenizer
    assert not rm.reads_token_ids(bos_byte_tokenizer())  # another tokenizer
    # Its own tokenizer adds a BOS to every text: bare ids would lack it.
    bos = bos_byte_tokenizer()
    assert not SequenceClassifierReward(model, bos).reads_token_ids(bos)


def test_eos_alone_scores_the_same_in_any_batch():
    """An empty text is scored as EOS alone, and EOS is the pad id: batched with longer rows it
    must still be read at its own token, not on its left padding."""
    model = _rm_copy()
    rm = SequenceClassifierReward(model, load_tokenizer(RM))
    eos = rm.tokenizer.eos_token_id
    assert eos == rm.tokenizer.pad_token_id == model.config.pad_token_id
    alone = _raw_score(model, [eos])
    assert rm([""], [""], [{}])[0] == pytest.approx(alone, rel=1e-5, abs=1e-6)
    batched = rm(["", "The cat", "x"], ["", " sat on the mat", ""], [{}] * 3)
    assert batched[0] == pytest.approx(alone, rel=1e-5, abs=1e-6)
    assert batched[2] == pytest.approx(_raw_score(model, [ord("x")]), rel=1e-5, abs=1e-6)
    ids = rm.score_token_ids([[], list(b"The cat")], [[], list(b" sat")], [{}] * 2)
    assert ids[0] == pytest.approx(alone, rel=1e-5, abs=1e-6)
    # A row whose real tokens end in EOS is read at that EOS too.
    ended = rm.score_token_ids([list(b"ab"), list(b"longer row")], [[99, eos], []], [{}] * 2)
    assert ended[0] == pytest.approx(_raw_score(model, [97, 98, 99, eos]), rel=1e-5, abs=1e-6)


def test_reward_model_training_scores_texts_as_the_wrapper_does():
    """The trainer fits the scores the env will read: same encoding, same pooling."""
    model = _rm_copy()
    tok = load_tokenizer(RM)
    texts = ["", "The cat sat", "x", "0123456789" * 40]
    wrapper = SequenceClassifierReward(model, tok)(texts, [""] * 4, [{}] * 4)
    encoder = _Encoder(tok, SequenceClassifierReward(model, tok).max_length)
    trained_on = _score_all(model, encoder, texts, "cpu", batch_size=3)
    np.testing.assert_allclose(trained_on, wrapper, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- load_reward


def my_reward(prompts, completions, metadata):
    return [float(len(c)) for c in completions]


def test_load_reward_kinds(tmp_path):
    assert load_reward(my_reward) is my_reward
    assert load_reward(f"{__name__}:my_reward") is my_reward
    rm = load_reward(RM)
    assert isinstance(rm, SequenceClassifierReward)
    assert load_reward(RM) is rm  # one wrapper per frozen model: one call counter
    assert rm.model is load_sequence_classifier(RM)
    assert load_reward("tiny-rm:seed=3") is not rm

    half_rm = load_reward(RM, dtype="bfloat16")
    assert half_rm is not rm and half_rm.model.dtype == torch.bfloat16

    torch.manual_seed(0)
    folder = FusedRewardHead("tiny").save(tmp_path / "head")
    head = load_reward(str(folder))
    assert isinstance(head, FusedRewardHead)
    assert load_reward(str(folder)) is head
    other = load_reward(str(FusedRewardHead("tiny").save(tmp_path / "other")))
    assert other is not head  # cached per folder
    assert next(head.model.parameters()).dtype == torch.float32
    half = load_reward(str(folder), dtype="bfloat16")
    assert half is not head and next(half.model.parameters()).dtype == torch.bfloat16


# --------------------------------------------------------------------------- score and checks


def test_score_returns_checked_floats_and_names_the_reward():
    def ints(prompts, completions, metadata):
        return [1, 2]

    got = score(ints, ["p", "q"], ["a", "b"], [{}, {}], name="reward 'ints'")
    assert got.dtype == np.float64 and got.tolist() == [1.0, 2.0]
    with pytest.raises(RewardModelError, match=r"^reward 'ints' returned 2 scores for 3 "):
        score(ints, ["p"] * 3, ["a"] * 3, [{}] * 3, name="reward 'ints'")
    with pytest.raises(RewardModelError, match=r"^reward model returned 2 scores"):
        score(ints, ["p"] * 3, ["a"] * 3, [{}] * 3)


def test_check_reward_callable_refuses_what_cannot_be_called():
    with pytest.raises(TypeError, match=r"^reward 5 is not callable; expected reward\(prompts"):
        check_reward_callable(5, "reward 5")

    def two(prompts, completions):
        return []

    with pytest.raises(TypeError) as err:
        check_reward_callable(two, "reward 'two'")
    msg = str(err.value)
    assert msg.startswith("reward 'two' has the signature two(prompts, completions), which")
    assert REWARD_SIGNATURE in msg
    assert err.value.__cause__ is None and err.value.__suppress_context__

    def keyword_only(prompts, completions, *, metadata):
        return []

    with pytest.raises(TypeError, match="keyword_only"):
        check_reward_callable(keyword_only, "r")

    class NoName:  # a callable object without __name__
        def __call__(self, a, b):
            return []

    with pytest.raises(TypeError, match=r"has the signature reward\(a, b\)"):
        check_reward_callable(NoName(), "r")


def test_check_reward_callable_accepts_and_trial_calls():
    calls = []

    def good(prompts, completions, metadata, *extra):
        calls.append((prompts, completions, metadata))
        return [0.5] * len(completions)

    check_reward_callable(good, "r")  # no trial: not called
    assert calls == []
    trial = (["a prompt"], [""], [{"k": 1}])
    check_reward_callable(good, "r", trial)
    assert calls == [trial]
    # A callable without an inspectable signature is checked by its trial call alone.
    check_reward_callable(max, "r")
    with pytest.raises(RewardModelError, match="trial call"):
        check_reward_callable(max, "r", trial)


def test_trial_call_errors_name_the_reward_and_the_call():
    def raises(prompts, completions, metadata):
        raise KeyError("target")

    trial = (["p" * 200], [""], [{"x": 1}])
    with pytest.raises(RewardModelError) as err:
        check_reward_callable(raises, "reward 'raises'", trial)
    msg = str(err.value)
    assert msg.startswith("reward 'raises' raised on a trial call made when the env was built")
    assert "KeyError: 'target'" in msg and msg.endswith(REWARD_SIGNATURE)
    assert "reward(['" + "p" * 78 + ", [''], [{'x': 1}]" in msg  # the prompt list cut at 80
    assert isinstance(err.value.__cause__, KeyError)

    def wrong_count(prompts, completions, metadata):
        return [1.0, 2.0]

    with pytest.raises(
        RewardModelError,
        match=r"^reward 'w' \(trial call when the env was built\) returned 2 scores for 1 ",
    ):
        check_reward_callable(wrong_count, "reward 'w'", trial)


def test_check_user_reward_checks_callables_and_callable_specs_only():
    trial = (["p"], [""], [{}])

    def bad(prompts, completions, metadata):
        return ["x"]

    with pytest.raises(RewardModelError, match=r"^gold 'test_check_user_reward_checks_callables.*<locals>\.bad' \(trial"):  # fmt: skip
        check_user_reward(bad, bad, "gold", trial)
    spec = f"{__name__}:my_reward"
    with pytest.raises(RewardModelError, match=rf"^reward '{spec}' \(trial call"):
        check_user_reward(spec, lambda p, c, m: [math.nan], "reward", trial)

    class Scorer:
        def __call__(self, prompts, completions, metadata):
            return [None]

    with pytest.raises(RewardModelError, match=r"^reward '.*Scorer object at"):
        check_user_reward(Scorer(), Scorer(), "reward", trial)
    # A learned reward model (a folder or a tiny spec) is not trial-called here.
    check_user_reward(RM, bad, "reward", trial)
    check_user_reward("./some/folder", bad, "reward", trial)


# --------------------------------------------------------------------------- what scores may be


@pytest.mark.parametrize(
    "raw, want",
    [
        ([1, 2.5], [1.0, 2.5]),
        ((3, -1), [3.0, -1.0]),
        (np.array([1, 2], dtype=np.int8), [1.0, 2.0]),
        (np.array([[0.5], [1.5]], dtype=np.float32), [0.5, 1.5]),  # a column: flattened
        (np.array([7], dtype=np.uint8), [7.0]),
        (torch.tensor([0.25, -2.0], dtype=torch.float16), [0.25, -2.0]),
        (torch.tensor([[1.0], [2.0]], requires_grad=True), [1.0, 2.0]),
        ([torch.tensor(1.5), np.float32(2.0)], [1.5, 2.0]),
        ([[0.5], [1.5]], [0.5, 1.5]),  # a column of lists: flattened like an array's
        ([torch.tensor([3.0]), 4], [3.0, 4.0]),
        ([np.int64(2), 3.0], [2.0, 3.0]),
        ([], []),
        ((), []),
        (np.zeros(0), []),
    ],
)
def test_real_numbers_are_read_as_float64(raw, want):
    got = check_scores(raw, len(want), name="r")
    assert got.dtype == np.float64 and got.ndim == 1
    assert got.tolist() == want


@pytest.mark.parametrize(
    "raw, match",
    [
        (torch.tensor([True, False]), r"^r returned bools, not scores: tensor\(\[ True, False\]\)"),
        ("0.5", r"^r returned a string, not scores: '0.5'"),
        (b"0.5", r"^r returned a string, not scores: b'0.5'"),
        ([True, 0.5], r"^r returned a non-numeric score True \(bool\) for completion 0; expected reward\("),
        ([0.5, np.bool_(True)], r"^r returned a non-numeric score (np\.)?True_? \(bool_?\) for completion 1; "),
        ([0.5, "1"], r"^r returned a non-numeric score '1' \(str\) for completion 1"),
        ([0.5, None], r"^r returned a non-numeric score None \(NoneType\) for completion 1"),
        ([1.0, 1j], r"non-numeric score 1j \(complex\) for completion 1"),
        ([torch.tensor(1.0), "2"], r"non-numeric score '2' \(str\) for completion 1"),
        ([torch.tensor(True), 1.0], r"non-numeric score tensor\(True\) \(Tensor\) for completion 0"),
        ([torch.tensor([1.0, 2.0]), 1.0], r"non-numeric score tensor\(\[1\., 2\.\]\) \(Tensor\)"),
        (np.array([True, False]), r"^r returned scores of dtype bool \(array\(\[ True, False\]\)\); expected real numbers"),
        (np.array(["1", "2"]), r"^r returned scores of dtype <U1 "),
        (np.array([1 + 1j, 2]), r"^r returned scores of dtype complex128 "),
        ({1.0, 2.0}, r"^r returned a non-numeric score \{"),
    ],
)  # fmt: skip
def test_non_numbers_are_refused_naming_what_came_back(raw, match):
    with pytest.raises(RewardModelError, match=match):
        check_scores(raw, 2, name="r")


def test_a_ragged_list_is_refused():
    with pytest.raises(
        RewardModelError, match=r"^r returned a non-numeric score \[1\.0\] \(list\)"
    ):
        check_scores([1.0, [1.0]], 2, name="r")


def test_count_and_finiteness():
    with pytest.raises(RewardModelError, match=r"^r returned 3 scores for 2 completions$"):
        check_scores([1.0, 2.0, 3.0], 2, name="r")
    with pytest.raises(
        RewardModelError, match=r"^reward model returned 1 scores for 2 completions"
    ):
        check_scores([1.0], 2)
    for bad, shown in ((math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")):
        with pytest.raises(
            RewardModelError, match=rf"^r returned a non-finite score \({shown}\) for completion 1$"
        ):
            check_scores([0.0, bad, math.nan], 3, name="r")
    got = check_scores([1e300, -1e300], 2, name="r")  # large but finite
    assert got.tolist() == [1e300, -1e300]
