"""Preference data formats, simulated labellers and `textenv sample`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from textenv.preferences import (
    PreferenceFormatError,
    PreferencePair,
    Ranking,
    SimulatedLabeller,
    noise_ceiling,
    read_preferences,
    read_rankings,
    sample_completions,
    write_jsonl,
)


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


class FakeDataset:
    """Duck-typed stand-in for datasets.Dataset."""

    def __init__(self, rows):
        self.rows = rows
        self.column_names = sorted(rows[0])

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)


# ---------------------------------------------------------------------------- formats


def test_pairs_roundtrip_with_margin_and_metadata(tmp_path):
    pairs = [
        PreferencePair("p", "good", "bad", 0.5, {"source": "x"}),
        PreferencePair("q", "a", "b"),
    ]
    path = tmp_path / "prefs.jsonl"
    assert write_jsonl(path, pairs) == 2
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0] == {"prompt": "p", "chosen": "good", "rejected": "bad", "margin": 0.5,
                       "source": "x"}  # fmt: skip
    assert "margin" not in rows[1]
    back = read_preferences(path)
    assert back == pairs and back[0].metadata == {"source": "x"} and back.skipped == []


def test_rankings_expand_to_all_pairs_in_order(tmp_path):
    path = _write(tmp_path / "r.jsonl", [{"prompt": "p", "completions": ["a", "b", "c", "d"],
                                          "ranking": [2, 0, 3, 1]}])  # fmt: skip
    pairs = read_preferences(path)
    assert len(pairs) == math.comb(4, 2)
    got = {(p.chosen, p.rejected) for p in pairs}
    order = ["c", "a", "d", "b"]
    assert got == {(order[i], order[j]) for i in range(4) for j in range(i + 1, 4)}
    rows = read_rankings(path, require_ranking=True)
    assert rows[0].ranking == [2, 0, 3, 1]


def test_identical_completions_in_a_ranking_give_no_pair():
    pairs = read_preferences(
        [{"prompt": "p", "completions": ["x", "x", "y"], "ranking": [0, 1, 2]}]
    )
    assert [(p.chosen, p.rejected) for p in pairs] == [("x", "y"), ("x", "y")]


def test_unlabelled_rankings_roundtrip(tmp_path):
    rows = [Ranking("p", ["a", "b"], None, {"k": 1})]
    path = tmp_path / "s.jsonl"
    write_jsonl(path, rows)
    assert json.loads(path.read_text())["ranking"] is None
    back = read_rankings(path)
    assert back[0].completions == ["a", "b"] and back[0].metadata == {"k": 1}
    with pytest.raises(PreferenceFormatError, match="not labelled"):
        read_preferences(path)


def test_dataset_objects_are_accepted():
    ds = FakeDataset([{"prompt": "p", "chosen": "a", "rejected": "b"}] * 3)
    assert len(read_preferences(ds)) == 3
    ds2 = FakeDataset([{"prompt": "p", "completions": ["a", "b"], "ranking": [1, 0]}])
    assert read_preferences(ds2)[0].chosen == "b"


BAD_ROWS = [
    ({"prompt": "p", "chosen": "a"}, "missing key 'rejected'"),
    ({"chosen": "a", "rejected": "b"}, "missing key 'prompt'"),
    ({"prompt": "p", "chosen": "a", "rejected": "a"}, "same text"),
    ({"prompt": "p", "chosen": "a", "rejected": "b", "margin": "big"}, "margin"),
    ({"prompt": "p", "chosen": [{"role": "user"}], "rejected": "b"}, "conversational"),
    ({"prompt": "p", "completions": ["a", "b"], "ranking": [0, 0]}, "permutation"),
    ({"prompt": "p", "completions": ["a", "b"], "ranking": [0, 1, 2]}, "permutation"),
    ({"prompt": "p", "completions": ["a"], "ranking": [0]}, "at least 2"),
    ({"prompt": "p", "completions": ["a", "b"], "ranking": ["0", "1"]}, "integers"),
    ('{"prompt": "p", "chosen": ', "invalid JSON"),
    ("[1, 2]", "JSON object"),
]


@pytest.mark.parametrize("bad,message", BAD_ROWS)
def test_malformed_rows_name_file_and_line(tmp_path, bad, message):
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    path = _write(tmp_path / "bad.jsonl", [good, "", bad, good])
    with pytest.raises(PreferenceFormatError, match=message) as info:
        read_preferences(path)
    assert f"{path}:3:" in str(info.value)
    with pytest.warns(UserWarning, match="skipped 1 malformed"):
        pairs = read_preferences(path, on_error="skip")
    assert len(pairs) == 2 and len(pairs.skipped) == 1 and f"{path}:3:" in pairs.skipped[0]


def test_bad_on_error_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="on_error"):
        read_preferences([], on_error="ignore")
    with pytest.raises(FileNotFoundError):
        read_preferences(tmp_path / "nope.jsonl")


# ---------------------------------------------------------------------------- labellers


def gold_len(prompts, completions, metadata):
    return [float(len(c)) for c in completions]


def test_deterministic_labeller_prefers_higher_gold_and_ceiling_is_one():
    lab = SimulatedLabeller(gold_len, temperature=0.0, ties="skip")
    res = lab.label_pairs(["p"] * 3, ["aa", "a", "bb"], ["b", "bbb", "cc"])
    assert [(p.chosen, p.rejected) for p in res.items] == [("aa", "b"), ("bbb", "a")]
    assert res.n_ties == 1 and res.n_skipped == 1 and res.noise_ceiling == 1.0
    assert res.items[0].metadata["gold_chosen"] == 2.0


@pytest.mark.parametrize("ties", ["random", "prefer_first"])
def test_tie_policies(ties):
    lab = SimulatedLabeller(lambda p, c, m: [0.0] * len(c), ties=ties, seed=1)
    res = lab.label_pairs(["p"] * 400, ["x"] * 400, ["y"] * 400)
    assert len(res.items) == 400 and res.n_ties == 400
    first = np.mean([p.chosen == "x" for p in res.items])
    if ties == "random":
        assert 0.4 < first < 0.6 and res.noise_ceiling == 0.5
    else:
        assert first == 1.0 and res.noise_ceiling == 1.0


def test_bradley_terry_rate_matches_sigmoid_and_is_seeded():
    n, diff, t = 4000, 0.2, 0.2
    gold = lambda p, c, m: [diff if x == "a" else 0.0 for x in c]  # noqa: E731
    lab = SimulatedLabeller(gold, temperature=t, seed=3)
    res = lab.label_pairs(["p"] * n, ["a"] * n, ["b"] * n)
    p = 1 / (1 + math.exp(-diff / t))
    rate = np.mean([x.chosen == "a" for x in res.items])
    assert abs(rate - p) < 3 * math.sqrt(p * (1 - p) / n)
    assert res.noise_ceiling == pytest.approx(p)
    again = SimulatedLabeller(gold, temperature=t, seed=3).label_pairs(["p"] * n, ["a"] * n,
                                                                         ["b"] * n)  # fmt: skip
    assert [x.chosen for x in again.items] == [x.chosen for x in res.items]


def test_noise_ceiling():
    assert noise_ceiling([1.0, 0.0, 0.5, 0.8]) == pytest.approx((1 + 1 + 0.5 + 0.8) / 4)


def test_rankings_plackett_luce_pairwise_marginals():
    gold = lambda p, c, m: [{"a": 0.3, "b": 0.0, "c": 0.0}[x] for x in c]  # noqa: E731
    rows = [Ranking("p", ["a", "b", "c"]) for _ in range(3000)]
    res = SimulatedLabeller(gold, temperature=0.3, ties="random", seed=0).label_rankings(rows)
    a_over_b = np.mean([r.ranking.index(0) < r.ranking.index(1) for r in res.items])
    p = 1 / (1 + math.exp(-1.0))
    assert abs(a_over_b - p) < 0.03
    assert res.n_ties == 3000  # b vs c in each set
    det = SimulatedLabeller(gold, ties="prefer_first").label_rankings(rows[:2])
    assert det.items[0].ranking == [0, 1, 2] and det.noise_ceiling == 1.0
    with pytest.raises(ValueError, match="skip"):
        SimulatedLabeller(gold, ties="skip").label_rankings(rows[:1])


def test_labeller_accepts_spec_and_label_samples_pairs():
    lab = SimulatedLabeller("textenv.tasks.sentiment:gold_score", temperature=0.0, ties="skip")
    rows = [Ranking("It is", [" great and wonderful", " terrible and awful", " a table"])]
    res = lab.label_samples(rows, "pairs")
    assert res.n_compared == 3 and res.n_skipped == 0
    assert {(p.chosen, p.rejected) for p in res.items} == {
        (" great and wonderful", " terrible and awful"),
        (" great and wonderful", " a table"),
        (" a table", " terrible and awful"),
    }


def test_bad_labeller_arguments():
    with pytest.raises(ValueError, match="ties"):
        SimulatedLabeller(gold_len, ties="coin")
    with pytest.raises(ValueError, match="temperature"):
        SimulatedLabeller(gold_len, temperature=-1)


# ---------------------------------------------------------------------------- sampling


def test_sample_completions_is_seeded_and_batched():
    prompts = ["Hello there", "A", "The quick brown fox"]
    kw = dict(k=3, max_new_tokens=5, max_prompt_tokens=6, batch_size=4)
    a = sample_completions("tiny", prompts, seed=1, **kw)
    b = sample_completions("tiny", prompts, seed=1, **kw)
    c = sample_completions("tiny", prompts, seed=2, **kw)
    assert [r.completions for r in a] == [r.completions for r in b]
    assert [r.completions for r in a] != [r.completions for r in c]
    assert [r.prompt for r in a] == prompts and all(len(r.completions) == 3 for r in a)
    assert all(r.ranking is None for r in a)


def test_sample_cli_writes_file_ready_for_labelling(tmp_path):
    from textenv.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one\ntwo\nthree\n")
    out = tmp_path / "samples.jsonl"
    argv = ["sample", "--policy", "tiny", "--prompts", str(prompts), "--split", "all", "-k", "2",
            "--max-new-tokens", "4", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    rows = read_rankings(out)
    assert len(rows) == 3 and all(len(r.completions) == 2 and r.ranking is None for r in rows)
