"""The episode batch's lockstep path (every row stepping: whole-array operations) and its
row-selection path (some rows stepping) are the same MDP.

One batch steps all its rows at once; a twin with the same prompts starts and steps its rows one
at a time. Observations, the log π and reference rows, the step results and what finished rows
report must agree, also with rows of different prompt lengths, an early EOS (the other rows go on
through the row-selection path), a missing log π, the missing-EOS penalty, and per-token KL
(the KV-cached reference).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_env_core_mutants import IdsReward
from test_env_edges import EOS, KW

from textenv.env.config import EnvConfig
from textenv.env.core import EpisodeBatch
from textenv.env.prompts import Prompt

pytestmark = pytest.mark.usefixtures("one_thread")

B = 4
PROMPTS = [Prompt(text, {"k": k}) for k, text in enumerate(["Hi", "Hello there", "", "x"])]
# (steps, B): row 1 ends with EOS on the second step, the others run to max_new_tokens = 4.
ACTIONS = np.array([[104, 101, 108, 33], [105, EOS, 110, 0], [106, 7, 111, 256 - 1], [33] * 4])
LOGPI = np.array([[-1.0, -2.0, np.nan, -0.5], [-0.3, -4.0, -1.5, np.nan]] * 2)


def _batch(kl_reward: str, reward) -> EpisodeBatch:
    config = EnvConfig.from_kwargs(
        dict(KW, kl_reward=kl_reward, reward=reward, missing_eos_penalty=1.5, kl_coef=0.2)
    )
    return EpisodeBatch(config, B)


@pytest.mark.parametrize("kl_reward", ["terminal", "per_token"])
@pytest.mark.parametrize("reward", ["tiny-rm", "ids"])
def test_lockstep_steps_equal_row_by_row_steps(kl_reward, reward):
    fn = IdsReward() if reward == "ids" else reward
    whole, rows = _batch(kl_reward, fn), _batch(kl_reward, fn)
    whole.start(np.arange(B), PROMPTS)
    for r, prompt in enumerate(PROMPTS):
        rows.start(np.array([r]), [prompt])
    assert whole.obs_ids.tolist() == rows.obs_ids.tolist()
    assert whole.obs_mask.tolist() == rows.obs_mask.tolist()
    assert len({int(m) for m in whole.obs_mask.sum(1)}) > 1  # prompts of different lengths
    lockstep = 0
    for actions, logpi in zip(ACTIONS, LOGPI):
        stepped = np.flatnonzero(whole.active)
        lockstep += len(stepped) == B
        got = whole.apply(actions, logpi, stepped)
        want_rewards, want_term, want_trunc = np.zeros(B), np.zeros(B, bool), np.zeros(B, bool)
        for r in stepped:  # one row per call: the row-selection path
            rew, term, trunc, fin = rows.apply(actions, logpi, np.array([r]))
            want_rewards[r], want_term[r], want_trunc[r] = rew[r], term[r], trunc[r]
            if fin is not None:  # the same report as the lockstep batch's for that row
                i = got[3].rows.tolist().index(r)
                for key in ("rm_score", "kl", "ref_logprobs", "logprobs", "num_tokens", "penalty"):
                    np.testing.assert_allclose(
                        getattr(got[3], key)[i], getattr(fin, key)[0], rtol=1e-5, atol=1e-6
                    )
                assert (got[3].text[i], got[3].prompt[i]) == (fin.text[0], fin.prompt[0])
                assert got[3].kl_coef == fin.kl_coef
        np.testing.assert_allclose(got[0], want_rewards, rtol=1e-5, atol=1e-6)
        assert got[1].tolist() == want_term.tolist() and got[2].tolist() == want_trunc.tolist()
        for name in ("obs_ids", "obs_mask", "n_gen", "active"):
            assert getattr(whole, name).tolist() == getattr(rows, name).tolist(), name
        np.testing.assert_allclose(whole.logp, rows.logp, equal_nan=True)
        np.testing.assert_allclose(whole.step_ref, rows.step_ref, rtol=1e-5, equal_nan=True)
    assert lockstep == 2  # two lockstep steps, then row 1 has ended
    assert not whole.active.any()
    assert whole.n_gen.tolist() == [4, 2, 4, 4]
    if kl_reward == "per_token":
        assert np.isfinite(whole.step_ref[:, :2]).all()
