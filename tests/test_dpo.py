"""DPO / IPO: the losses by hand, the encoding, learning against controls, resume, the CLI.

The learning task: Tiny-v0's reference is a random byte-level GPT-2, so its own samples are
almost vowel-free (gold = vowel fraction ≈ 0.02): nothing good to sharpen. Pairs of its samples
(k = 4 per prompt, all C(4, 2) pairs) are labelled by the gold scorer without noise. DPO has
learnt when the implicit reward ``β·(log π − log ρ)`` orders **held-out** pairs (other samples)
like the gold scorer does well above chance. Measured on this machine (1 thread):
1014 training pairs, 2 passes, β 0.1, lr 1e-3: held-out accuracy 0.667 ± 0.021 (517 pairs) in
about 3 s of CPU, and 0.495 ± 0.022 with shuffled labels; the test asks for 0.5 + 4 standard
errors.

Controls that must fail the same margin:
* **shuffled labels** (chosen and rejected swapped by a coin flip, so the labels carry no
  information about the gold scorer): the same training, accuracy ≈ 0.5;
* **lr = 0**: the weights never move;
* **β = 0**: the sigmoid loss is −log σ(0·h) = log 2 whatever the policy, so its gradient is
  exactly 0 (d/dθ = −σ(−β·h)·β·dh/dθ = 0): the weights never move although the optimiser steps.
  This is a real control because the β = 0 agent runs every line of the training path (data,
  reference cache, forwards, backward, Adam) and differs only in the strength of the preference
  signal.
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from bos_tokenizer import bos_byte_tokenizer

from agents import ALGORITHMS, DPO, DPOConfig
from agents.dpo import _accuracy, dpo_loss, encode_pairs
from textenv.env.config import DEFAULT_PROMPTS
from textenv.lm.models import load_tokenizer
from textenv.preferences import PreferencePair, SimulatedLabeller, sample_completions, write_jsonl
from textenv.tasks.tiny import gold_score

pytestmark = pytest.mark.usefixtures("one_thread")
N_SE = 4.0


def _pairs(seed: int, n_prompts: int) -> list:
    prompts = [DEFAULT_PROMPTS[i % 9] for i in range(n_prompts)]
    rows = sample_completions(
        "tiny", prompts, k=4, max_new_tokens=16, max_prompt_tokens=8, seed=seed, batch_size=256
    )
    labeller = SimulatedLabeller(gold_score, temperature=0.0, ties="skip", seed=seed)
    return list(labeller.label_samples(rows, mode="pairs").items)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dpo")
    train, val = _pairs(0, 400), _pairs(1, 200)
    rng = random.Random(0)
    shuffled = [
        {"prompt": p.prompt, "chosen": p.rejected, "rejected": p.chosen}
        if rng.random() < 0.5
        else {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
        for p in train
    ]
    paths = {"train": folder / "train.jsonl", "val": folder / "val.jsonl"}
    paths["shuffled"] = folder / "shuffled.jsonl"
    write_jsonl(paths["train"], train)
    write_jsonl(paths["val"], val)
    write_jsonl(paths["shuffled"], shuffled)
    return {k: str(v) for k, v in paths.items()}


def _config(data_path: str, **kw) -> DPOConfig:
    base = dict(
        env_id="textenv/Tiny-v0",
        data=data_path,
        num_envs=8,
        eval_every=0,
        progress=False,
        lr=1e-3,
        beta=0.1,
    )
    return DPOConfig(**{**base, **kw})


def _params(agent: DPO) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in agent.policy.model.parameters()])


# --------------------------------------------------------------------------- losses by hand


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


PC, PR = [-3.0, -10.0, -4.5], [-5.0, -2.0, -4.5]  # policy log-probs of chosen / rejected
RC, RR = [-4.0, -9.0, -5.0], [-4.5, -3.0, -4.0]  # reference log-probs


def _h(i: int) -> float:
    return (PC[i] - RC[i]) - (PR[i] - RR[i])


def _run(beta: float, loss_type: str, eps: float = 0.0) -> list[float]:
    t = [torch.tensor(x, dtype=torch.float64) for x in (PC, PR, RC, RR)]
    losses, chosen, rejected = dpo_loss(*t, beta=beta, loss_type=loss_type, label_smoothing=eps)
    for i in range(3):
        assert chosen[i].item() == pytest.approx(beta * (PC[i] - RC[i]))
        assert rejected[i].item() == pytest.approx(beta * (PR[i] - RR[i]))
    return losses.tolist()


def test_sigmoid_loss_by_hand():
    beta = 0.5
    got = _run(beta, "sigmoid")
    # h = (1) − (−0.5) = 1.5; (−1) − (1) = −2; (0.5) − (−0.5) = 1
    assert [_h(i) for i in range(3)] == [1.5, -2.0, 1.0]
    want = [-math.log(_sig(beta * _h(i))) for i in range(3)]
    assert got == pytest.approx(want, abs=1e-12)
    assert got[0] == pytest.approx(math.log(1 + math.exp(-0.75)))


def test_label_smoothing_by_hand():
    beta, eps = 0.5, 0.2
    got = _run(beta, "sigmoid", eps)
    want = [
        -(1 - eps) * math.log(_sig(beta * _h(i))) - eps * math.log(_sig(-beta * _h(i)))
        for i in range(3)
    ]
    assert got == pytest.approx(want, abs=1e-12)


def test_ipo_loss_by_hand():
    beta = 0.25  # target margin 1/(2β) = 2
    got = _run(beta, "ipo")
    assert got == pytest.approx([(1.5 - 2) ** 2, (-2.0 - 2) ** 2, (1.0 - 2) ** 2], abs=1e-12)
    eps = 0.1
    got = _run(beta, "ipo", eps)
    want = [(1 - eps) * (_h(i) - 2) ** 2 + eps * (-_h(i) - 2) ** 2 for i in range(3)]
    assert got == pytest.approx(want, abs=1e-12)


def test_loss_gradient_flows_the_implicit_rewards_are_detached():
    pc, pr = (torch.tensor(x, requires_grad=True) for x in (PC, PR))
    losses, chosen, rejected = dpo_loss(pc, pr, torch.tensor(RC), torch.tensor(RR), beta=0.5)
    assert losses.requires_grad and not chosen.requires_grad and not rejected.requires_grad
    losses.sum().backward()
    # d/dπ_c −log σ(β·h) = −β·σ(−β·h); the rejected log-prob gets the opposite.
    want = [-0.5 * _sig(-0.5 * _h(i)) for i in range(3)]
    assert pc.grad.tolist() == pytest.approx(want, abs=1e-6)
    assert pr.grad.tolist() == pytest.approx([-w for w in want], abs=1e-6)
    with pytest.raises(ValueError, match="loss_type must be one of"):
        dpo_loss(pc, pr, torch.tensor(RC), torch.tensor(RR), beta=0.5, loss_type="hinge")


def test_accuracy_counts_ties_as_half():
    got = _accuracy(torch.tensor([2.0, -1.0, 0.0, 1e-9, -1e-9, 0.0]))
    assert got.dtype == torch.float32
    assert got.tolist() == [1.0, 0.0, 0.5, 1.0, 0.0, 0.5]


def test_pairs_encoded_as_episodes_by_hand():
    """Prompts left-padded like the env's (an empty one as EOS alone); completions right-padded,
    EOS appended to one shorter than max_new_tokens, one at or over it cut without EOS."""
    tok = load_tokenizer("tiny")  # bytes: one token per character; EOS = pad = 256
    eos = pad = 256
    P, N = 4, 3
    pairs = [
        PreferencePair("abcdef", "xy", "xyz"),  # prompt cut to its last 4; 2 and 3 tokens
        PreferencePair("", "", "wxyz"),  # empty prompt and chosen; rejected over N
    ]
    data = encode_pairs(pairs, tok, P, N)
    assert len(data) == 2 and data.truncated == 1
    assert data.prompt_ids.tolist() == [[99, 100, 101, 102], [pad, pad, pad, eos]]
    assert data.prompt_mask.tolist() == [[1, 1, 1, 1], [0, 0, 0, 1]]
    assert data.chosen.tolist() == [[120, 121, eos], [eos, pad, pad]]
    assert data.chosen_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert data.rejected.tolist() == [[120, 121, 122], [119, 120, 121]]
    assert data.rejected_mask.tolist() == [[1, 1, 1], [1, 1, 1]]
    for t in (data.prompt_ids, data.prompt_mask, data.chosen, data.chosen_mask):
        assert t.dtype == torch.long
    assert data.num_tokens() == 10 and data.num_tokens(slice(1, 2)) == 4
    empty = encode_pairs([], tok, P, N)
    assert len(empty) == 0 and empty.prompt_ids.shape == (0, P) and empty.chosen.shape == (0, N)


def test_completions_get_no_special_tokens_and_every_cut_is_counted():
    """With a tokenizer that puts BOS (256) in front of a text, the prompt keeps it (as the env's
    prompts do) and the completions, which continue the prompt, get none."""
    tok = bos_byte_tokenizer()
    bos = eos = pad = 256
    pairs = [PreferencePair("ab", "wxyz", "uvwxyz"), PreferencePair("c", "q", "rstu")]
    data = encode_pairs(pairs, tok, 4, 3)
    assert data.truncated == 3  # wxyz, uvwxyz, rstu: each over 3 tokens
    assert data.prompt_ids.tolist() == [[pad, bos, 97, 98], [pad, pad, bos, 99]]
    assert data.chosen.tolist() == [[119, 120, 121], [113, eos, pad]]
    assert data.rejected.tolist() == [[117, 118, 119], [114, 115, 116]]


def _manual_logprob(
    model, prompt_ids: list[int], completion_ids: list[int], temperature: float = 1.0
) -> float:
    """Sum of log p(completion token | prefix) at ``temperature``, one unpadded forward,
    computed here."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double() / temperature
    logp = torch.log_softmax(logits, dim=-1)
    n = len(prompt_ids)
    return float(sum(logp[n - 1 + j, tok] for j, tok in enumerate(completion_ids)))


def test_agent_loss_matches_hand_computation(tmp_path):
    """Encoding (prompts left-truncated, EOS appended to a completion that ended, none on a
    full-length one), the per-sequence log-probs of policy and reference at the env's
    temperature, and the loss with label smoothing, against a manual forward; on given pairs
    and on val_data, whose reference log-probs are cached apart from the training pairs'."""
    T = 0.7
    N = 16  # Tiny-v0's max_new_tokens
    rows = [
        {"prompt": "The old house", "chosen": " was big", "rejected": " x" * 8},  # 16 tokens
        {"prompt": "A good friend", "chosen": "", "rejected": " is kind"},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train = tmp_path / "train.jsonl"  # other pairs (the same ones reversed) to train on
    train.write_text("".join(json.dumps(r) + "\n" for r in reversed(rows)))
    for loss_type, beta, eps in (("sigmoid", 0.3, 0.2), ("ipo", 0.3, 0.0)):
        # A policy that differs from the reference ("tiny"), so h ≠ 0.
        cfg = _config(
            str(train),
            model="tiny:seed=7",
            beta=beta,
            loss_type=loss_type,
            label_smoothing=eps,
            val_data=str(path),
            env_kwargs={"temperature": T},
            lr=0.0,
            batch_size=2,
            minibatch_size=2,
        )
        agent = DPO(cfg)
        assert agent.policy.temperature == T
        tok, eos = agent.policy.tokenizer, agent.policy.tokenizer.eos_token_id
        losses, accs = [], []
        for r in rows:
            # The env keeps a prompt's last max_prompt_tokens (8) tokens.
            p = tok(r["prompt"], add_special_tokens=False)["input_ids"][-agent.policy.P :]
            lp = {}
            for key in ("chosen", "rejected"):
                c = tok(r[key], add_special_tokens=False)["input_ids"]
                c = c + [eos] if len(c) < N else c  # " x" * 8 is exactly N tokens: no EOS
                assert len(c) <= N
                pol = _manual_logprob(agent.policy.model, p, c, T)
                ref = _manual_logprob(agent.reference, p, c, T)
                if loss_type == "ipo":
                    pol, ref = pol / len(c), ref / len(c)
                lp[key] = (pol, ref)
            h = (lp["chosen"][0] - lp["chosen"][1]) - (lp["rejected"][0] - lp["rejected"][1])
            assert h != 0
            if loss_type == "sigmoid":
                losses.append(
                    -(1 - eps) * math.log(_sig(beta * h)) - eps * math.log(_sig(-beta * h))
                )
            else:
                losses.append((h - 1 / (2 * beta)) ** 2)
            accs.append(1.0 if h > 0 else 0.0)
        agent.learn(passes=1)  # lr 0: the policy stays; the training pairs' log-probs cached
        for got in (agent.evaluate_pairs(str(path)), agent.evaluate_pairs()):
            assert got["loss"] == pytest.approx(sum(losses) / 2, rel=1e-4)
            assert got["accuracy"] == pytest.approx(sum(accs) / 2)
        agent.close()


def test_prompts_encoded_like_the_env(data):
    agent = DPO(_config(data["train"]))
    obs, _ = agent.envs.reset(seed=0, options={"prompts": [p.prompt for p in agent.pairs[:8]]})
    P = agent.policy.P
    np.testing.assert_array_equal(obs["input_ids"][:, :P], agent.train_data.prompt_ids[:8].numpy())
    np.testing.assert_array_equal(
        obs["attention_mask"][:, :P], agent.train_data.prompt_mask[:8].numpy()
    )
    agent.close()


# --------------------------------------------------------------------------- learning + controls


def _train(path: str, val: str, **kw) -> tuple[DPO, dict[str, float]]:
    agent = DPO(_config(path, val_data=val, **kw))
    before = agent.evaluate_pairs()
    assert before["accuracy"] == 0.5 and before["loss"] == pytest.approx(math.log(2))  # π = ρ
    agent.learn(passes=2)
    return agent, agent.evaluate_pairs()


def test_dpo_learns_heldout_preferences(data):
    agent, after = _train(data["train"], data["val"])
    assert after["n"] >= 400
    assert after["accuracy"] > 0.5 + N_SE * after["accuracy_sem"], after
    h = agent.history
    assert h[-1]["dpo/accuracy"] > 0.6 and h[-1]["dpo/loss"] < math.log(2)
    assert h[-1]["dpo/chosen_reward"] > h[-1]["dpo/rejected_reward"]
    assert h[-1]["dpo/passes"] >= 2.0 and agent.tokens_seen >= 2 * agent.tokens_per_pass
    agent.close()


def test_dpo_shuffled_labels_control_does_not_learn(data):
    agent, after = _train(data["shuffled"], data["val"])
    assert after["accuracy"] < 0.5 + N_SE * after["accuracy_sem"], after
    agent.close()


@pytest.mark.parametrize("kw", [{"lr": 0.0}, {"beta": 0.0}], ids=["lr0", "beta0"])
def test_dpo_zero_controls_do_not_move(data, kw):
    agent = DPO(_config(data["train"], val_data=data["val"], **kw))
    start = _params(agent)
    agent.learn(10**9, iterations=4)
    assert torch.equal(_params(agent), start)  # not one weight moved
    after = agent.evaluate_pairs()
    assert after["accuracy"] == 0.5 and after["margin"] == 0.0
    if kw.get("beta") == 0.0:
        assert agent.history[-1]["policy/grad_norm"] == 0.0
    agent.close()


def test_ipo_learns_some(data):
    agent = DPO(_config(data["train"], val_data=data["val"], loss_type="ipo", beta=0.5))
    agent.learn(passes=1)
    after = agent.evaluate_pairs()
    assert after["accuracy"] > 0.5 + 2 * after["accuracy_sem"], after
    agent.close()


# --------------------------------------------------------------------------- data, resume, CLI


def test_rankings_are_expanded(tmp_path):
    path = tmp_path / "rank.jsonl"
    row = {"prompt": "Once upon a time", "completions": ["aa", "bb", "cc"], "ranking": [2, 0, 1]}
    path.write_text(json.dumps(row) + "\n")
    agent = DPO(_config(str(path), batch_size=4, minibatch_size=2))
    assert [(p.chosen, p.rejected) for p in agent.pairs] == [
        ("cc", "aa"),
        ("cc", "bb"),
        ("aa", "bb"),
    ]
    agent.learn(10**9, iterations=1)  # 4 pairs from a pool of 3: wraps into the next pass
    assert agent.history[-1]["dpo/passes"] == pytest.approx(4 / 3)
    agent.close()


def test_resume_continues_exactly(data, tmp_path):
    kw = dict(batch_size=32, minibatch_size=16)
    straight = DPO(_config(data["train"], **kw)).learn(10**6, iterations=4)
    first = DPO(_config(data["train"], log_dir=str(tmp_path / "logs"), **kw))
    first.learn(10**6, iterations=2, checkpoint=tmp_path / "ckpt")  # saved when learn ends
    resumed = DPO.load(tmp_path / "ckpt", progress=False)
    assert resumed.iteration == 2 and resumed.tokens_seen == first.tokens_seen
    resumed.learn(10**6, iterations=2)
    assert [h["dpo/loss"] for h in resumed.history] == pytest.approx(
        [h["dpo/loss"] for h in straight.history], rel=1e-5
    )
    assert torch.allclose(_params(resumed), _params(straight), atol=1e-6)
    lines = (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "dpo/margin" in json.loads(lines[0])
    # Other data under the same path: resuming would silently change the pair order.
    changed = tmp_path / "changed.jsonl"
    changed.write_text(open(data["train"]).read().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match="differs from the file"):
        DPO.load(tmp_path / "ckpt", data=str(changed))


def test_env_metrics_are_logged(data):
    agent = DPO(
        _config(data["train"], eval_every=2, eval_prompts=8, batch_size=16, minibatch_size=16)
    )
    agent.learn(10**9, iterations=3)
    h = agent.history
    for key in ("env/rm_score", "env/kl", "env/return", "env/gold_score"):
        assert key in h[0] and key in h[2] and key not in h[1]
    assert abs(h[0]["env/kl"]) < 1e-4  # the policy starts at the reference
    agent.close()


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"data": None}, "preference pairs"),
        ({"loss_type": "ipo", "beta": 0.0}, "beta must be > 0"),
        ({"label_smoothing": 0.5}, "label_smoothing"),
        ({"batch_size": 48, "minibatch_size": 32}, "does not divide batch_size"),
        ({"loss_type": "hinge"}, "loss_type"),
        ({"beta": -1.0}, "beta"),
    ],
)
def test_config_errors(kw, match):
    cfg = _config("x.jsonl")
    for k, v in kw.items():
        setattr(cfg, k, v)
    with pytest.raises(ValueError, match=match):
        cfg.validate()


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        DPO(_config(str(tmp_path / "nope.jsonl")))


def test_registered_and_cli_train(data, tmp_path, capsys):
    from textenv.cli import main

    assert ALGORITHMS["dpo"] == (DPO, DPOConfig)
    out = str(tmp_path / "agent")
    argv = ["train", "--algo", "dpo", "--data", data["train"], "--env", "textenv/Tiny-v0"]
    argv += ["--total-tokens", "2000", "--out", out]
    argv += ["--config", '{"num_envs": 8, "progress": false, "eval_every": 0}']
    assert main(argv) == 0
    assert "saved dpo agent" in capsys.readouterr().out
    resumed = DPO.load(out)
    assert resumed.tokens_seen >= 2000 and resumed.config.data == data["train"]
    assert (tmp_path / "agent-logs" / "metrics.jsonl").is_file()


def test_main_job_with_dpo(tmp_path):
    """`textenv run --algo dpo --quick`: no reward model, DPO on the simulated preferences,
    evaluated like the RL path (same table, curve and plot)."""
    from textenv.pipeline import RunConfig, run

    out = run(RunConfig.quick(task="sort", algo="dpo"), tmp_path / "run")
    assert out["reward_model"]["kind"] == "none"
    assert not (tmp_path / "run" / "reward_model" / "rm").exists()
    train = (tmp_path / "run" / "policy" / "pairs" / "train.jsonl").read_text().splitlines()
    val = (tmp_path / "run" / "policy" / "pairs" / "val.jsonl").read_text().splitlines()
    assert len(train) + len(val) == out["preferences"]["labelled"] and val
    assert 0.0 <= out["policy"]["val_pair_accuracy"] <= 1.0
    table = out["evaluation"]["table"]
    assert set(table) == {"env reward", "gold", "KL"}
    assert table["KL"]["before"]["mean"] == pytest.approx(0.0, abs=1e-4)
    assert table["KL"]["after"]["mean"] > 0.05  # DPO moved the policy away from the reference
    curve = json.loads((tmp_path / "run" / "policy" / "curve.json").read_text())
    assert [p["iteration"] for p in curve] == [0, 3, 6]
    assert (tmp_path / "run" / "evaluation" / "reward_vs_kl.png").is_file()


def test_bfloat16_compute_starts_at_the_reference(data):
    """Under compute_dtype="bfloat16" the reference is scored in the same precision, so the
    policy starts exactly at the reference (h = 0) and still trains."""
    agent = DPO(_config(data["train"], compute_dtype="bfloat16", batch_size=32))
    start = agent.evaluate_pairs(data["val"])
    assert start["accuracy"] == 0.5 and start["margin"] == 0.0
    agent.learn(10**9, iterations=2)
    assert agent.history[-1]["dpo/margin"] != 0.0
    agent.close()
