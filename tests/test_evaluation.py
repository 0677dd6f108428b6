from __future__ import annotations

import numpy as np
import pytest

from agents.evaluation import Stat, evaluate


def test_stat_mean_and_standard_error():
    s = Stat.of(np.array([1.0, 2.0, 3.0, 4.0]))
    assert s.mean == 2.5 and s.n == 4
    assert s.sem == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)


def test_evaluate_is_seeded_and_reports_every_metric():
    a = evaluate("tiny", "textenv/Tiny-v0", n_prompts=6, seed=3, batch_size=4)
    b = evaluate("tiny", "textenv/Tiny-v0", n_prompts=6, seed=3, batch_size=4)
    assert set(a.metrics) >= {"rm_score", "gold_score", "kl", "return"}
    assert a.metrics["rm_score"].n == 6 and len(a.texts) == 6
    assert a.as_dict() == b.as_dict() and a.texts == b.texts
    # the policy *is* the reference at the env's temperature: KL is exactly 0
    assert a.metrics["kl"].mean == pytest.approx(0.0, abs=1e-6)


def test_evaluate_uses_eval_prompts_only():
    prompts = [f"p{i}" for i in range(20)]
    ev = evaluate(
        "tiny",
        "textenv/TextGen-v0",
        n_prompts=8,
        seed=0,
        batch_size=8,
        prompts=prompts,
        eval_fraction=0.25,
    )
    from textenv.env.prompts import load_prompts

    eval_set = {p.text for p in load_prompts(prompts, "eval", eval_fraction=0.25)}
    assert set(ev.prompts) <= eval_set
