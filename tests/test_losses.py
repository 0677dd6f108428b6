"""The agents' losses against hand computation on tiny batches.

Every expected value here is plain Python arithmetic written out in the test (never the package's
own helpers), so a sign, a clip direction or a normalisation that goes wrong in the package shows
up as a different number. Gradients are checked where the direction is the point (the clip
stops the gradient on one side only; the KL term pulls log π towards log ρ).
"""

from __future__ import annotations

import math
import statistics
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agents import GRPO, PPO, RLOO, GRPOConfig, PPOConfig, RLOOConfig
from agents.grpo import group_advantages, grpo_loss
from agents.ppo import clipped_policy_loss, clipped_value_loss, gae
from agents.rloo import leave_one_out_advantages
from textenv.preferences import PreferencePair
from textenv.training.bradley_terry import (
    RewardModelConfig,
    fit_bradley_terry,
    margins,
    pair_metrics,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def t(rows: list[list[float]], grad: bool = False) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64, requires_grad=grad)


# --------------------------------------------------------------------------- PPO: policy


# One sequence per clip case (ε = 0.2); the third token of every row is padding.
# ratio r = exp(log π − log π_old):
#   row 0: r = 1.5, A = +2 → clipped at 1 + ε: loss −2·1.2 = −2.4, no gradient
#   row 1: r = 1.5, A = −2 → unclipped (max picks −A·r = 3.0 > 2.4): gradient flows
#   row 2: r = 0.5, A = −2 → clipped at 1 − ε: loss 2·0.8 = 1.6, no gradient
#   row 3: r = 0.5, A = +2 → unclipped (−A·r = −1.0 > −1.6): gradient flows
#   row 4: r = 1.1, A = +1 → inside the range: −1.1
RATIOS = [1.5, 1.5, 0.5, 0.5, 1.1]
ADVS = [2.0, -2.0, -2.0, 2.0, 1.0]
HAND_LOSS = [-2.4, 3.0, 1.6, -1.0, -1.1]
HAND_CLIPPED = [True, False, True, False, False]


def _ppo_batch() -> tuple[torch.Tensor, ...]:
    old = t([[-1.0, -2.0, -3.0]] * 5)
    logprobs = t([[o + math.log(r), -2.0 + math.log(r), 7.0] for o, r in zip([-1.0] * 5, RATIOS)])
    logprobs.requires_grad_(True)
    adv = t([[a, a, 100.0] for a in ADVS])  # the padded token's huge advantage must not count
    mask = torch.tensor([[True, True, False]] * 5)
    return logprobs, old, adv, mask


def test_ppo_clipped_surrogate_both_directions_by_hand():
    logprobs, old, adv, mask = _ppo_batch()
    loss, ratio = clipped_policy_loss(logprobs, old, adv, mask, clip_eps=0.2)
    # Two real tokens per row, each with the row's value: the masked mean is the row mean.
    assert loss.item() == pytest.approx(sum(HAND_LOSS) / 5, abs=1e-9)
    torch.testing.assert_close(ratio[:, 0], torch.tensor(RATIOS, dtype=torch.float64))
    loss.backward()
    g = logprobs.grad
    for row, (clipped, a, r) in enumerate(zip(HAND_CLIPPED, ADVS, RATIOS)):
        if clipped:  # the clip removes the incentive to move further
            assert g[row, 0] == 0 and g[row, 1] == 0, row
        else:  # d(−A·r)/d log π = −A·r, divided by the 10 real tokens
            assert float(g[row, 0]) == pytest.approx(-a * r / 10, abs=1e-9), row
    assert (g[:, 2] == 0).all()  # padding gets no gradient


def test_ppo_surrogate_is_minus_advantage_times_ratio_without_clipping():
    logprobs, old, adv, mask = _ppo_batch()
    loss, _ = clipped_policy_loss(logprobs, old, adv, mask, clip_eps=0.99)
    assert loss.item() == pytest.approx(sum(-a * r for a, r in zip(ADVS, RATIOS)) / 5, abs=1e-9)


# --------------------------------------------------------------------------- PPO: value


def test_ppo_clipped_value_loss_by_hand():
    # clip 0.2; per token: max((V − R)², (V_clip − R)²), V_clip = V_old + clip(V − V_old, ±0.2)
    values = t([[1.0, 0.5, 0.0, 3.0]], grad=True)
    old = t([[0.5, 0.0, 0.1, 9.0]])
    returns = t([[0.0, 1.0, 0.2, -5.0]])
    mask = torch.tensor([[True, True, True, False]])
    # token 0: V moved +0.5 (clipped to 0.7); (1.0−0)² = 1.00 vs (0.7−0)² = 0.49 → 1.00
    # token 1: V moved +0.5 (clipped to 0.2); (0.5−1)² = 0.25 vs (0.2−1)² = 0.64 → 0.64
    # token 2: V moved −0.1 (inside);         (0.0−0.2)² = 0.04 both          → 0.04
    loss = clipped_value_loss(values, old, returns, mask, clip_value=0.2)
    assert loss.item() == pytest.approx(0.5 * (1.00 + 0.64 + 0.04) / 3, abs=1e-9)
    # Downward moves: V_old 0.5 → V 0.0 is clipped to 0.3.
    #   R = −1: (0 + 1)² = 1.00 vs (0.3 + 1)² = 1.69 → 1.69 (the clipped value is worse)
    #   R = +1: (0 − 1)² = 1.00 vs (0.3 − 1)² = 0.49 → 1.00
    down = clipped_value_loss(t([[0.0, 0.0]]), t([[0.5, 0.5]]), t([[-1.0, 1.0]]),
                              torch.tensor([[True, True]]), clip_value=0.2)  # fmt: skip
    assert down.item() == pytest.approx(0.5 * (1.69 + 1.00) / 2, abs=1e-9)
    loss.backward()
    # token 1 is scored by its clipped value, which does not depend on V: no gradient.
    assert float(values.grad[0, 1]) == 0.0
    assert float(values.grad[0, 0]) == pytest.approx(0.5 * 2 * (1.0 - 0.0) / 3, abs=1e-9)
    assert float(values.grad[0, 3]) == 0.0


# --------------------------------------------------------------------------- GAE


def test_gae_with_discount_and_lambda_by_hand():
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[0.5, 0.0, 1.0, 7.0], [0.0, -1.0, 3.0, 3.0]])
    values = torch.tensor([[0.2, 0.4, 0.3, 5.0], [0.1, 0.6, 5.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    adv = gae(rewards, values, mask, gamma, lam)
    # Row 0 (3 tokens; the value after the last token is 0):
    d2 = 1.0 + 0.0 - 0.3  # 0.7
    d1 = 0.0 + 0.9 * 0.3 - 0.4  # -0.13
    d0 = 0.5 + 0.9 * 0.4 - 0.2  # 0.66
    a2 = d2
    a1 = d1 + 0.72 * a2  # γλ = 0.72
    a0 = d0 + 0.72 * a1
    torch.testing.assert_close(adv[0], torch.tensor([a0, a1, a2, 0.0]))
    # Row 1 (2 tokens)
    e1 = -1.0 - 0.6
    e0 = 0.0 + 0.9 * 0.6 - 0.1
    torch.testing.assert_close(adv[1], torch.tensor([e0 + 0.72 * e1, e1, 0.0, 0.0]))
    # λ = 1: the advantage is the discounted return-to-go minus the value.
    adv1 = gae(rewards, values, mask, gamma, 1.0)
    g0 = 0.5 + 0.9 * 0.0 + 0.81 * 1.0
    torch.testing.assert_close(adv1[0, 0], torch.tensor(g0 - 0.2))
    # An episode that fills all N tokens bootstraps up to its last token.
    full = gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.1, 0.2, 0.4]]),
               torch.ones(1, 3, dtype=torch.bool), gamma, lam)  # fmt: skip
    f2 = 1.0 - 0.4
    f1 = 0.9 * 0.4 - 0.2 + 0.72 * f2
    f0 = 0.9 * 0.2 - 0.1 + 0.72 * f1
    torch.testing.assert_close(full[0], torch.tensor([f0, f1, f2]))


# --------------------------------------------------------------------------- GRPO


def _grpo_batch() -> tuple[torch.Tensor, ...]:
    # Two sequences of 3 and 1 real tokens (N = 3); ratios all 1 (on-policy first step).
    logprobs = t([[-1.0, -2.0, -0.5], [-1.5, 0.0, 0.0]], grad=True)
    old = logprobs.detach().clone()
    ref = t([[-1.5, -1.0, -0.5], [-1.0, 0.0, 0.0]])
    adv = torch.tensor([1.0, -2.0], dtype=torch.float64)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    return logprobs, old, ref, adv, mask


def _k3(logp: float, ref: float) -> float:
    d = ref - logp
    return math.exp(d) - d - 1


def test_grpo_three_normalisations_by_hand():
    beta = 0.1
    logprobs, old, ref, adv, mask = _grpo_batch()
    # Per token (r = 1): −A + β·k3(π, ρ).
    row0 = [-1.0 + beta * _k3(-1.0, -1.5), -1.0 + beta * _k3(-2.0, -1.0), -1.0 + 0.0]
    row1 = [2.0 + beta * _k3(-1.5, -1.0)]
    expected = {
        "grpo": (sum(row0) / 3 + row1[0]) / 2,  # per-sequence means, then the mean
        "bnpo": (sum(row0) + row1[0]) / 4,  # every real token weighs the same
        "dr_grpo": (sum(row0) + row1[0]) / (2 * 3),  # a constant: batch × max tokens
    }
    for loss_type, want in expected.items():
        loss, ratio, kl = grpo_loss(
            logprobs,
            old,
            ref,
            adv,
            mask,
            epsilon_low=0.2,
            epsilon_high=0.28,
            beta=beta,
            loss_type=loss_type,
        )
        assert loss.item() == pytest.approx(want, abs=1e-9), loss_type
    assert kl[0, 1].item() == pytest.approx(_k3(-2.0, -1.0), abs=1e-12)
    assert (kl >= 0).all() and (ratio == 1).all()
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(logprobs, old, ref, adv, mask, epsilon_low=0.2, epsilon_high=0.2, beta=0.1,
                  loss_type="sum")  # fmt: skip


@pytest.mark.parametrize("kl_ratio", [True, False])
def test_grpo_kl_term_pulls_log_pi_towards_the_reference(kl_ratio):
    logprobs, old, ref, _, mask = _grpo_batch()
    zero_adv = torch.zeros(2, dtype=torch.float64)
    loss, _, _ = grpo_loss(
        logprobs, old, ref, zero_adv, mask, epsilon_low=0.2, epsilon_high=0.2, beta=0.5,
        loss_type="bnpo", kl_ratio=kl_ratio,
    )  # fmt: skip
    # On-policy (r = 1) the value is β·k3 either way: mean over the 4 real tokens.
    k3s = [_k3(-1.0, -1.5), _k3(-2.0, -1.0), 0.0, _k3(-1.5, -1.0)]
    assert loss.item() == pytest.approx(0.5 * sum(k3s) / 4, abs=1e-12)
    loss.backward()
    g = logprobs.grad
    if kl_ratio:  # d/dπ β·r·k3 at r = 1: β·(log π − log ρ), the reverse KL's gradient
        want = 0.5 * (-1.0 - -1.5) / 4
    else:  # d/dπ β·(e^(ρ−π) − (ρ−π) − 1) = β·(1 − e^(ρ−π))
        want = 0.5 * (1 - math.exp(-0.5)) / 4
    assert g[0, 0].item() == pytest.approx(want, abs=1e-12)
    assert g[0, 0] > 0  # π above ρ: a descent step lowers log π
    assert g[0, 1] < 0 and g[1, 0] < 0  # π below ρ: a descent step raises log π
    assert g[0, 2] == 0 and g[1, 1] == 0  # π = ρ, and padding
    if kl_ratio:  # the default is the ratio-weighted term
        lp = logprobs.detach().clone().requires_grad_(True)
        grpo_loss(lp, old, ref, zero_adv, mask, epsilon_low=0.2, epsilon_high=0.2, beta=0.5,
                  loss_type="bnpo")[0].backward()  # fmt: skip
        torch.testing.assert_close(lp.grad, g)


def test_grpo_without_kl_term_ignores_an_overflowing_log_ratio():
    # β = 0: no KL term at all, so a log ratio whose k3 overflows to inf cannot turn the loss NaN.
    logprobs = t([[-1000.0]], grad=True)
    ref = t([[0.0]])
    loss, _, kl = grpo_loss(
        logprobs, logprobs.detach(), ref, torch.tensor([1.0], dtype=torch.float64),
        torch.ones(1, 1, dtype=torch.bool), epsilon_low=0.2, epsilon_high=0.2, beta=0.0,
        loss_type="grpo",
    )  # fmt: skip
    assert math.isinf(kl.item())
    assert loss.item() == -1.0


def test_grpo_asymmetric_clip_by_hand():
    # One token each, off-policy ratios: ε_low = 0.2, ε_high = 0.28, β = 0.
    ratios, advs = [1.5, 0.5, 1.5, 0.5], [1.0, -1.0, -1.0, 1.0]
    old = t([[0.0]] * 4)
    logprobs = t([[math.log(r)] for r in ratios], grad=True)
    loss, _, _ = grpo_loss(
        logprobs, old, old, torch.tensor(advs, dtype=torch.float64), torch.ones(4, 1, dtype=torch.bool),
        epsilon_low=0.2, epsilon_high=0.28, beta=0.0, loss_type="grpo",
    )  # fmt: skip
    # −min(r·A, clip(r)·A): [−1.28 (clipped high), 0.8 (clipped low), 1.5, −0.5]
    assert loss.item() == pytest.approx((-1.28 + 0.8 + 1.5 - 0.5) / 4, abs=1e-9)
    loss.backward()
    assert logprobs.grad[0, 0] == 0 and logprobs.grad[1, 0] == 0
    assert float(logprobs.grad[2, 0]) == pytest.approx(1.5 / 4, abs=1e-9)


def test_group_advantages_by_hand():
    r = torch.tensor([1.0, 3.0, 0.0, 0.0, 4.0, 8.0])
    adv, std = group_advantages(r, 2, "group", eps=0.01)
    s = math.sqrt(2.0)  # sample std of (1, 3) = √2; of (4, 8) = 2√2
    torch.testing.assert_close(adv[:2], torch.tensor([-1 / (s + 0.01), 1 / (s + 0.01)]))
    torch.testing.assert_close(std, torch.tensor([s, 0.0, 2 * s]))
    assert (adv[2:4] == 0).all()  # a group of equal rewards teaches nothing
    torch.testing.assert_close(adv[4:], torch.tensor([-2 / (2 * s + 0.01), 2 / (2 * s + 0.01)]))
    default, _ = group_advantages(r, 2)  # the defaults: group std, ε = 1e-4
    torch.testing.assert_close(default[:2], torch.tensor([-1 / (s + 1e-4), 1 / (s + 1e-4)]))
    centred = [-1.0, 1.0, 0.0, 0.0, -2.0, 2.0]  # Dr. GRPO: centred, not scaled
    torch.testing.assert_close(group_advantages(r, 2, "none")[0], torch.tensor(centred))
    batch_std = statistics.stdev([1.0, 3.0, 0.0, 0.0, 4.0, 8.0])  # one std for the whole batch
    torch.testing.assert_close(
        group_advantages(r, 2, "batch", eps=0.01)[0],
        torch.tensor([c / (batch_std + 0.01) for c in centred]),
    )
    with pytest.raises(ValueError, match="scale must be one of"):
        group_advantages(r, 2, "std")


# --------------------------------------------------------------------------- RLOO


def test_rloo_leave_one_out_by_hand():
    r = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 4.0])
    adv = leave_one_out_advantages(r, 4)
    want = [1 - 11 / 3, 2 - 10 / 3, 3 - 9 / 3, 6 - 6 / 3, 0 - 4 / 3, 0 - 4 / 3, 0 - 4 / 3, 4 - 0]
    torch.testing.assert_close(adv, torch.tensor(want))
    adv2 = leave_one_out_advantages(r, 2)  # groups of 2: the other sample is the baseline
    torch.testing.assert_close(adv2, torch.tensor([-1.0, 1.0, -3.0, 3.0, 0.0, 0.0, -4.0, 4.0]))


# --------------------------------------------------------------------------- one update's direction


def _sort(config_cls, **kw):
    """Sort-v0 (graded rewards in [0, 1]) without a KL term: the return is the task score."""
    base = dict(env_id="textenv/Sort-v0", env_kwargs={"kl_coef": 0.0}, num_envs=16)
    base["minibatch_size"] = 16
    return config_cls(**{**base, "progress": False, "anneal_lr": False, **kw})


@pytest.mark.parametrize(
    "agent_cls, config",
    [
        (PPO, _sort(PPOConfig, lr=1e-3, epochs=1, gae_lambda=1.0)),
        (PPO, _sort(PPOConfig, lr=1e-3, epochs=1, gae_lambda=1.0, value_model="separate")),
        (GRPO, _sort(GRPOConfig, lr=1e-3, epochs=1, group_size=4, beta=0.0)),
        (RLOO, _sort(RLOOConfig, lr=1e-3, k=4)),
    ],
    ids=["ppo", "ppo-separate-value", "grpo", "rloo"],
)
def test_one_update_raises_the_log_prob_of_better_than_average_episodes(agent_cls, config):
    """One gradient step moves log π(sequence) up where the return beats its baseline."""
    agent = agent_cls(config)
    agent.generator.manual_seed(0)
    rollout = agent._collect()
    returns = rollout.returns.double()
    assert returns.std() > 0
    with torch.no_grad():
        before = (agent.policy.score(rollout) * rollout.mask).sum(1).double()
    agent._update(rollout)
    with torch.no_grad():
        after = (agent.policy.score(rollout) * rollout.mask).sum(1).double()
    k = getattr(config, "group_size", getattr(config, "k", None)) or len(returns)
    centred = returns.view(-1, k) - returns.view(-1, k).mean(1, keepdim=True)
    change = (after - before).view(-1, k)
    # Up for the better episodes, down for the worse: a positive correlation within groups.
    assert float((centred * change).sum()) > 0, (centred, change)


def test_ppo_separate_value_model_is_the_one_that_predicts_values():
    agent = PPO(_sort(PPOConfig, value_model="separate"))
    agent.generator.manual_seed(0)
    rollout = agent._collect()
    torch.nn.init.normal_(agent.value_head.weight)  # the zero-init head would hide the trunk
    with torch.no_grad():
        logp0, v0 = agent._score(rollout, slice(None))
        for p in agent.value_model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        logp1, v1 = agent._score(rollout, slice(None))
        for p in agent.policy.model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        logp2, v2 = agent._score(rollout, slice(None))
    m = rollout.mask
    assert (v1[m] - v0[m]).abs().max() > 1e-3  # the value trunk moves the values
    torch.testing.assert_close(logp1, logp0)  # ... and not the policy
    torch.testing.assert_close(v2, v1)  # the policy's trunk does not move the values
    assert (logp2[m] - logp1[m]).abs().max() > 1e-3
    with torch.no_grad():  # a minibatch's rows get their own values, in order
        rows = torch.tensor([3, 1])
        logp_rows, v_rows = agent._score(rollout, rows)
    torch.testing.assert_close(v_rows, v2[rows])
    torch.testing.assert_close(logp_rows, logp2[rows])
    # And it is trained: one update changes the value trunk's weights.
    w = [p.detach().clone() for p in agent.value_model.parameters()]
    agent._update(rollout)
    assert any(not torch.equal(a, b) for a, b in zip(w, agent.value_model.parameters()))


# --------------------------------------------------------------------------- reward model


class ScoreTable(torch.nn.Module):
    """A "reward model" whose scores are its parameters: one per chosen / rejected text."""

    def __init__(self, chosen: list[float], rejected: list[float], val: list[list[float]]):
        super().__init__()
        self.chosen = torch.nn.Parameter(torch.tensor(chosen))
        self.rejected = torch.nn.Parameter(torch.tensor(rejected))
        self.val = torch.tensor(val)  # fixed scores of the held-out pairs: (chosen, rejected)

    def rewards(self, split: str, rows) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.as_tensor(rows)
        if split == "train":
            return self.chosen[rows], self.rejected[rows]
        if split == "val":
            return self.val[0][rows], self.val[1][rows]
        raise ValueError(f"unknown split {split!r}")


def _fit_one_step(table: ScoreTable, margins: list[float], val_margins: list[float], **cfg):
    """One epoch of one batch: a single AdamW step, which moves every score by ≈ −lr·sign(grad)."""
    config = RewardModelConfig(
        epochs=1, batch_size=len(margins), lr=0.1, grad_clip=0.0, weight_decay=0.0, **cfg
    )
    train_m = np.array(margins, dtype=np.float32)
    val_m = np.array(val_margins, np.float32)
    # One held-out pair per evaluation batch: the batches must cover every pair once.
    return fit_bradley_terry(table, table.rewards, train_m, val_m, config, eval_batch_size=1)


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_reward_model_loss_with_margin_by_hand():
    table = ScoreTable([1.0, 0.0, 2.0], [0.0, 0.5, 2.0], val=[[0.3, 1.0], [0.0, 1.0]])
    chosen0, rejected0 = table.chosen.detach().clone(), table.rejected.detach().clone()
    fit = _fit_one_step(table, margins=[0.5, 0.0, 1.0], val_margins=[0.2, 0.0])
    # −log σ(r_c − r_r − m) = softplus(−(r_c − r_r − m)); d = [0.5, −0.5, −1.0]
    want = (_softplus(-0.5) + _softplus(0.5) + _softplus(1.0)) / 3
    epoch1 = fit.history[1]
    assert epoch1["train_loss"] == pytest.approx(want, abs=1e-6)
    assert epoch1["train_accuracy"] == pytest.approx((1 + 0 + 0.5) / 3)  # a tie counts ½
    # Held out, before any step: d = [0.3 − 0 − 0.2, 1 − 1 − 0]
    val0 = fit.history[0]
    assert val0["val_loss"] == pytest.approx((_softplus(-0.1) + _softplus(0.0)) / 2, abs=1e-6)
    assert val0["val_accuracy"] == pytest.approx(0.75)
    # The step raises every chosen score and lowers every rejected one.
    torch.testing.assert_close(table.chosen.detach(), chosen0 + 0.1, atol=1e-4, rtol=0)
    torch.testing.assert_close(table.rejected.detach(), rejected0 - 0.1, atol=1e-4, rtol=0)


def test_reward_model_centring_pulls_scores_towards_zero():
    # r_c + r_r is large: the centring gradient 2·c·(r_c + r_r) outweighs the BT term (≤ 1).
    table = ScoreTable([5.0, 4.0], [5.0, 3.0], val=[[0.0], [0.0]])
    fit = _fit_one_step(table, margins=[0.0, 0.0], val_margins=[0.0], center_coef=1.0)
    torch.testing.assert_close(table.chosen.detach(), torch.tensor([4.9, 3.9]), atol=1e-4, rtol=0)
    torch.testing.assert_close(table.rejected.detach(), torch.tensor([4.9, 2.9]), atol=1e-4, rtol=0)
    # The reported loss is the Bradley–Terry part alone: d = [0, 1]
    assert fit.history[1]["train_loss"] == pytest.approx(
        (_softplus(0.0) + _softplus(-1.0)) / 2, abs=1e-6
    )
    negative = ScoreTable([-5.0], [-5.0], val=[[0.0], [0.0]])  # below 0: pulled up
    _fit_one_step(negative, margins=[0.0], val_margins=[0.0], center_coef=1.0)
    assert negative.chosen.item() == pytest.approx(-4.9, abs=1e-4)
    assert negative.rejected.item() == pytest.approx(-4.9, abs=1e-4)


def test_reward_model_margins_come_from_the_pairs_only_with_use_margin():
    pairs = [
        PreferencePair("p", "a", "b", margin=0.7),
        PreferencePair("p", "a", "c", margin=None),
        PreferencePair("q", "a", "b"),
    ]
    np.testing.assert_allclose(margins(pairs, use_margin=True), [0.7, 0.0, 0.0], atol=1e-7)
    np.testing.assert_array_equal(margins(pairs, use_margin=False), [0.0, 0.0, 0.0])
    assert margins(pairs, use_margin=True).dtype == np.float32  # the rewards' dtype
    duck = SimpleNamespace(prompt="p", chosen="a", rejected="b")  # a pair without a margin
    np.testing.assert_array_equal(margins([duck], use_margin=True), [0.0])


def test_pair_metrics_by_hand():
    rc, rr = np.array([2.0, 1.0, 0.0]), np.array([1.0, 1.0, 3.0])  # a win, a tie, a loss
    m = pair_metrics(rc, rr, np.array([0.5, 0.0, 0.0]))
    assert m["accuracy"] == pytest.approx((1 + 0.5 + 0) / 3)
    want = (_softplus(-0.5) + _softplus(0.0) + _softplus(3.0)) / 3  # d = [0.5, 0, −3]
    assert m["loss"] == pytest.approx(want, abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" on an empty split
        empty = pair_metrics(np.zeros(0), np.zeros(0), np.zeros(0))
    assert math.isnan(empty["loss"]) and math.isnan(empty["accuracy"])


def test_reward_model_loop_epochs_batches_and_early_stopping(capsys):
    # Three pairs in batches of 2; held-out scores fixed, so the validation loss never improves
    # after epoch 1: with patience 2 the loop stops after epoch 3 and keeps epoch 1's weights.
    table = ScoreTable([1.0, 0.0, 2.0], [0.0, 0.5, 3.0], val=[[0.3], [0.0]])
    train_m, val_m = np.zeros(3, np.float32), np.zeros(1, np.float32)
    config = RewardModelConfig(epochs=10, batch_size=2, lr=1e-7, patience=2, grad_clip=1.0)
    fit = fit_bradley_terry(table, table.rewards, train_m, val_m, config)
    assert capsys.readouterr().out == ""  # no progress output unless asked
    assert [h["epoch"] for h in fit.history] == [0, 1, 2, 3]
    assert fit.best_epoch == 1 and fit.epochs_run == 3 and fit.stopped_early is True
    assert 0 <= fit.train_time_s < 60 and all(0 <= h["time_s"] < 60 for h in fit.history[1:])
    # lr ≈ 0: every epoch's train loss is the mean over all three pairs (not the last batch's).
    want = (_softplus(-1.0) + _softplus(0.5) + _softplus(1.0)) / 3
    for h in fit.history[1:]:
        assert h["train_loss"] == pytest.approx(want, abs=1e-5)
        assert h["train_accuracy"] == pytest.approx(1 / 3)
        assert h["val_loss"] == pytest.approx(_softplus(-0.3), abs=1e-6)
    # Without held-out pairs every epoch runs and the last is kept.
    plain = ScoreTable([1.0, 0.0, 2.0], [0.0, 0.5, 2.0], val=[[0.0], [0.0]])
    config = RewardModelConfig(epochs=3, batch_size=2, lr=0.01, grad_clip=0.0)
    fit = fit_bradley_terry(plain, plain.rewards, train_m, np.zeros(0, np.float32), config)
    assert [h["epoch"] for h in fit.history] == [1, 2, 3] and "val_loss" not in fit.history[0]
    assert fit.best_epoch == 3 and fit.epochs_run == 3 and fit.stopped_early is False
    assert plain.chosen[0].item() > 1.02 and plain.rejected[0].item() < -0.02  # it trained
    with pytest.raises(ValueError, match="no training pairs"):
        fit_bradley_terry(plain, plain.rewards, np.zeros(0), np.zeros(0), config)


def test_reward_model_loop_reports_progress_per_epoch(capsys):
    table = ScoreTable([1.0], [0.0], val=[[0.0], [0.0]])
    config = RewardModelConfig(epochs=2, batch_size=1, lr=0.01, grad_clip=0.0)
    fit_bradley_terry(table, table.rewards, np.zeros(1, np.float32), np.zeros(1, np.float32),
                      config, progress=True)  # fmt: skip
    out = capsys.readouterr().out
    assert out.count("epoch 1: train_loss") == 1 and out.count("epoch 2: train_loss") == 1


class SharedScores(ScoreTable):
    """Held-out pairs scored by the trained parameters themselves: validation improves too."""

    def rewards(self, split: str, rows) -> tuple[torch.Tensor, torch.Tensor]:
        return super().rewards("train", rows)


def test_reward_model_loop_keeps_the_best_epochs_weights():
    def fit(epochs: int, val: bool = True, **kw):
        table = SharedScores([1.0, 0.0], [0.0, 0.5], val=[[0.0], [0.0]])
        config = RewardModelConfig(epochs=epochs, batch_size=2, lr=0.05, grad_clip=0.0, **kw)
        m = np.zeros(2, np.float32)
        return table, fit_bradley_terry(table, table.rewards, m, m if val else m[:0], config)

    # Validation improves by less than 1 nat per epoch, and every improvement counts.
    table, result = fit(3, patience=1)
    assert result.best_epoch == 3 and not result.stopped_early

    # Validation that worsens after epoch 1: the loop must restore epoch 1's weights.
    class Worsening(SharedScores):
        def rewards(self, split, rows):
            c, r = super().rewards(split, rows)
            return (c, r) if split == "train" else (-c, -r)  # training makes these worse

    table = Worsening([1.0, 0.0], [0.0, 0.5], val=[[0.0], [0.0]])
    config = RewardModelConfig(epochs=5, batch_size=2, lr=0.05, grad_clip=0.0, patience=2)
    m = np.zeros(2, np.float32)
    result = fit_bradley_terry(table, table.rewards, m, m, config)
    assert result.best_epoch == 1 and result.epochs_run == 3 and result.stopped_early
    one, _ = fit(1, val=False)  # the weights after exactly one epoch
    torch.testing.assert_close(table.chosen.detach(), one.chosen.detach())
    torch.testing.assert_close(table.rejected.detach(), one.rejected.detach())
    assert not torch.allclose(one.chosen.detach(), torch.tensor([1.0, 0.0]))  # it did move
