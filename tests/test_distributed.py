"""Data-parallel training on torch.distributed (gloo, CPU): the same update with N ranks as with
one process, torchrun end to end (``textenv train --nproc 2``, resume with another N), and a
failing rank that stops the job with its error instead of hanging."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from agents import DPO, GRPO, PPO, RLOO, DPOConfig, GRPOConfig, PPOConfig, RLOOConfig
from agents.__main__ import build_parser
from agents.distributed import LOCAL, Dist, init_distributed, shutdown, to_argv
from agents.policy import Rollout

pytestmark = pytest.mark.usefixtures("one_thread")

B, MB = 16, 8  # global batch and minibatch: 2 ranks take 8 rows, 4 per minibatch
COMMON = dict(
    env_id="textenv/Sort-v0", num_envs=B, minibatch_size=MB, epochs=2, lr=1e-3, seed=0,
    progress=False,
)  # fmt: skip
# Every global statistic the ranks must share: PPO's advantage whitening and token-mean losses,
# GRPO's batch std and token-level loss (bnpo) or per-sequence loss, RLOO's batch std.
CASES = {
    "ppo": (PPO, PPOConfig, {}),
    "ppo_value_model": (PPO, PPOConfig, dict(value_model="separate", whiten_advantages=False)),
    "grpo_bnpo_batch": (GRPO, GRPOConfig, dict(group_size=4, loss_type="bnpo", scale_rewards="batch")),
    "grpo_seq": (GRPO, GRPOConfig, dict(group_size=4, loss_type="grpo", beta=0.1)),
    "rloo": (RLOO, RLOOConfig, dict(k=4, epochs=2, normalize_advantages=True)),
}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(rollout: Rollout, rows: slice) -> Rollout:
    """The rollout's ``rows`` (every per-row field sliced)."""
    out = {}
    for f in fields(rollout):
        value = getattr(rollout, f.name)
        if isinstance(value, torch.Tensor | np.ndarray | list):
            out[f.name] = value[rows]
        elif isinstance(value, dict):
            out[f.name] = {k: v[rows] for k, v in value.items()}
    return replace(rollout, **out)


def _replay_agent(name: str, rollout_file: Path):
    """An agent of case ``name`` whose rollouts replay this rank's rows of a saved batch."""
    agent_cls, config_cls, extra = CASES[name]

    class Replay(agent_cls):
        def _collect(self) -> Rollout:
            full = torch.load(rollout_file, weights_only=False)
            return _rows(full, self.dist.local_rows(B))

    return Replay(config_cls(**{**COMMON, **extra}))


def _train_once(name: str, rollout_file: Path) -> dict:
    agent = _replay_agent(name, rollout_file)
    agent.learn(10**9, iterations=1)  # 2 epochs × 2 minibatches: 4 optimizer steps
    state = {f"policy.{k}": v.detach().clone() for k, v in agent.policy.model.state_dict().items()}
    for mod_name, module in agent.modules().items():
        state.update(
            {f"{mod_name}.{k}": v.detach().clone() for k, v in module.state_dict().items()}
        )
    out = {"params": state, "metrics": agent.history[-1], "tokens": agent.tokens_seen}
    agent.close()
    return out


@contextlib.contextmanager
def _as_rank(rank: int, world: int, port: int) -> Iterator[None]:
    """Join a CPU process group as `rank` of `world` (what torchrun's environment would say), and
    leave it on the way out, whatever happens inside."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )  # fmt: skip
    torch.set_num_threads(1)
    init_distributed("cpu", timeout_s=120)
    try:
        yield
    finally:
        shutdown()


def _rank_main(rank: int, world: int, port: int, folder: str) -> None:
    with _as_rank(rank, world, port):
        for name in CASES:
            result = _train_once(name, Path(folder) / "rollout.pt")
            torch.save(result, Path(folder) / f"{name}-rank{rank}.pt")


@pytest.fixture(scope="module")
def rollout_file(tmp_path_factory) -> Path:
    """One batch of B real episodes (Sort-v0, the initial policy), shared by every run."""
    folder = tmp_path_factory.mktemp("dist")
    agent = PPO(PPOConfig(**COMMON))
    agent.generator.manual_seed(123)
    rollout = agent._collect()
    agent.close()
    assert len(set(rollout.mask.sum(-1).tolist())) > 1  # lengths differ: token means matter
    torch.save(rollout, folder / "rollout.pt")
    return folder / "rollout.pt"


@pytest.fixture(scope="module")
def two_rank_results(rollout_file) -> dict:
    """Every case trained for one iteration on 2 gloo ranks (real processes), B/2 rows each."""
    folder = rollout_file.parent
    mp.start_processes(
        _rank_main, args=(2, _free_port(), str(folder)), nprocs=2, start_method="fork"
    )
    return {
        name: [torch.load(folder / f"{name}-rank{r}.pt", weights_only=False) for r in range(2)]
        for name in CASES
    }


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_take_the_same_step_as_one_process(name, rollout_file, two_rank_results):
    start = _replay_agent(name, rollout_file)
    before = {f"policy.{k}": v.detach().clone() for k, v in start.policy.model.state_dict().items()}
    start.close()
    one = _train_once(name, rollout_file)
    ranks = two_rank_results[name]
    # The ranks stay identical to each other (DDP averaged the same gradients everywhere).
    for key, value in ranks[0]["params"].items():
        assert torch.equal(value, ranks[1]["params"][key]), key
    # ... and equal to one process on the whole batch, while the step itself is far larger.
    moved = max(float((one["params"][k] - v).abs().max()) for k, v in before.items())
    assert moved > 1e-3
    for key, value in one["params"].items():
        torch.testing.assert_close(ranks[0]["params"][key], value, rtol=1e-4, atol=2e-6, msg=key)
    assert ranks[0]["tokens"] == one["tokens"]  # the global batch's tokens
    for key in ("loss/policy", "policy/approx_kl", "policy/grad_norm", "env/return", "env/kl"):
        if key in one["metrics"]:
            assert ranks[0]["metrics"][key] == pytest.approx(
                one["metrics"][key], rel=1e-4, abs=1e-6
            )
            assert ranks[1]["metrics"][key] == ranks[0]["metrics"][key]


def test_one_process_is_world_size_one():
    assert not LOCAL.enabled and LOCAL.is_main and init_distributed() is LOCAL
    x = torch.arange(6.0)
    assert LOCAL.gather_cat(x) is x and LOCAL.all_reduce_sum(x) is x and LOCAL.broadcast(x) is x
    assert LOCAL.local_rows(8) == slice(0, 8)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    assert float(LOCAL.token_share(mask)) == 1.0
    assert LOCAL.combine_kl_coef(0.1, 0.12) == 0.12


def test_rank_arithmetic_and_errors():
    second = Dist(rank=1, world_size=2)
    assert second.local_rows(16) == slice(8, 16)
    assert second.shard(torch.arange(8)).tolist() == [4, 5, 6, 7]
    assert second.seed_entropy(0, 3, 1) == [0, 3, 1, 1] and LOCAL.seed_entropy(0, 3, 1) == [0, 3, 1]
    assert second.device("cuda") == "cuda:0" and second.device("cpu") == "cpu"
    with pytest.raises(ValueError, match=r"num_envs=15 is not divisible by the number of ranks"):
        second.shard_size(15, "num_envs")
    with pytest.raises(ValueError, match="rank 2 is not in"):
        Dist(rank=2, world_size=2)


def test_a_step_without_a_ddp_forward_is_refused_on_ranks():
    agent = PPO(PPOConfig(**{**COMMON, "num_envs": 4, "minibatch_size": 2}))
    agent.dist = Dist(rank=0, world_size=2)  # as on rank 0 of two (no collective is reached)
    loss = sum(p.sum() for p in agent.parameters()) * 0.0
    with pytest.raises(RuntimeError, match=r"PPO cannot train on 2 ranks: .*Agent._forward"):
        agent._step(loss)
    agent.close()


def test_train_options_reach_the_ranks():
    args = build_parser().parse_args(
        ["--algo", "grpo", "--out", "ck", "--config", '{"lr": 0.1}', "--resume", "--seed", "3"]
    )
    again = build_parser().parse_args(to_argv(args, build_parser()))
    assert vars(again) == vars(args)


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_textenv_train_nproc_2_then_resume_with_one_process(tmp_path):
    out = tmp_path / "grpo"
    config = dict(
        num_envs=8, minibatch_size=4, group_size=4, epochs=1, progress=False, anneal_lr=False
    )
    cmd = [sys.executable, "-m", "textenv.cli", "train", "--nproc", "2", "--algo", "grpo"]
    cmd += ["--total-tokens", "60", "--out", str(out), "--config", json.dumps(config)]
    proc = _run(cmd, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("saved grpo agent") == 1  # rank 0 alone prints ...
    rows = (tmp_path / "grpo-logs" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(r) for r in rows]
    assert [r["iteration"] for r in rows] == list(range(1, len(rows) + 1))  # ... and logs
    assert all(r["dist/world_size"] == 2 for r in rows)
    iterations = rows[-1]["iteration"]
    # The checkpoint does not depend on N: one process continues it.
    agent = GRPO.load(out, progress=False, log_dir=str(tmp_path / "resumed-logs"))
    assert agent.iteration == iterations and agent.tokens_seen >= 60
    assert agent.envs.num_envs == 8  # the whole batch in one process
    agent.learn(10**6, iterations=1)
    assert agent.iteration == iterations + 1
    agent.close()


FAILING_RANK = """
import sys
from agents import GRPO, GRPOConfig
from agents.distributed import init_distributed

dist = init_distributed("cpu", timeout_s=float(sys.argv[1]))
agent = GRPO(GRPOConfig(env_id="textenv/Sort-v0", num_envs=8, minibatch_size=4, group_size=4,
                        epochs=1, progress=False))
if dist.rank == 1:
    raise RuntimeError("rank 1 fails on purpose")
agent.learn(10**9)  # rank 0 waits for rank 1 in the first collective
"""


def test_a_failing_rank_stops_the_job_with_its_error(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(textwrap.dedent(FAILING_RANK))
    timeout = 300  # the process-group timeout: the job must end long before it
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    t0 = time.monotonic()
    proc = _run([*cmd, str(script), str(timeout)], timeout=timeout - 60)
    elapsed = time.monotonic() - t0
    assert proc.returncode != 0
    assert "rank 1 fails on purpose" in proc.stdout + proc.stderr
    assert elapsed < timeout / 2


# --------------------------------------------------------------------------- DPO
# DPO's own loop: 2 ranks × half of every minibatch of pairs = 1 process × all of it. 27 pairs
# of different lengths (27 is odd: the reference cache is scored 14 + 13 pairs by the ranks).
DPO_CONFIG = dict(
    env_id="textenv/Tiny-v0", num_envs=4, batch_size=16, minibatch_size=8, epochs=2, lr=1e-3,
    beta=0.1, seed=0, eval_every=1, eval_prompts=4, progress=False,
)  # fmt: skip


def _dpo_pairs_file(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    words = ["sun", "moon", "tea", "aei", "xyz", "star", "oak", "ice"]  # ≤ 15 bytes: no cut
    rows = []
    for i in range(27):
        prompt, chosen, rejected = (
            " ".join(rng.choice(words, size=int(rng.integers(1, 4)))) for _ in range(3)
        )
        rows.append({"prompt": f"{i}: {prompt}", "chosen": chosen, "rejected": rejected + "!"})
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class _RowsSeen(DPO):
    """DPO that records the pairs of each training forward and counts the reference's."""

    def _logps(self, model, data, idx):
        if model is self.reference:
            self.ref_scored += len(data.chosen[idx])
        return super()._logps(model, data, idx)

    def _loss(self, data, name, idx):
        if name == "train":
            self.rows_seen.append(sorted(idx.tolist()))
        return super()._loss(data, name, idx)


def _dpo_train_once(data: Path, **kw) -> dict:
    agent = _RowsSeen(DPOConfig(data=str(data), **{**DPO_CONFIG, **kw}))
    agent.rows_seen, agent.ref_scored = [], 0
    before = {k: v.detach().clone() for k, v in agent.policy.model.state_dict().items()}
    agent.learn(10**9, iterations=1)  # 2 epochs × 2 minibatches of 8 pairs: 4 optimizer steps
    out = {
        "before": before,
        "params": {k: v.detach().clone() for k, v in agent.policy.model.state_dict().items()},
        "metrics": agent.history[-1],
        "tokens": agent.tokens_seen,
        "ref": tuple(x.clone() for x in agent._ref_cache["train"]),
        "rows": agent.rows_seen,
        "ref_scored": agent.ref_scored,
    }
    agent.close()
    return out


def _dpo_rank_main(rank: int, world: int, port: int, folder: str) -> None:
    with _as_rank(rank, world, port):
        result = _dpo_train_once(Path(folder) / "pairs.jsonl")
        torch.save(result, Path(folder) / f"dpo-rank{rank}.pt")


def test_dpo_two_ranks_take_the_same_step_as_one_process(tmp_path):
    data = _dpo_pairs_file(tmp_path)
    mp.start_processes(
        _dpo_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="fork"
    )
    ranks = [torch.load(tmp_path / f"dpo-rank{r}.pt", weights_only=False) for r in range(2)]
    one = _dpo_train_once(data)
    # Every rank caches every pair's reference log-probs, the same ones, though it scored only
    # its share of them (the ranks gather the rest); they are the ones one process scores.
    assert (ranks[0]["ref_scored"], ranks[1]["ref_scored"], one["ref_scored"]) == (14, 13, 27)
    for x0, x1, x in zip(ranks[0]["ref"], ranks[1]["ref"], one["ref"]):
        assert x0.shape == (27,) and torch.equal(x0, x1)
        torch.testing.assert_close(x0, x, rtol=1e-5, atol=1e-5)
    # Each rank trains on its own half of every minibatch (not on all of it).
    assert len(one["rows"]) == len(ranks[0]["rows"]) == len(ranks[1]["rows"]) == 4
    for step, rows in enumerate(one["rows"]):
        half0, half1 = ranks[0]["rows"][step], ranks[1]["rows"][step]
        assert len(half0) == len(half1) == 4 and sorted(half0 + half1) == rows
    for key, value in ranks[0]["params"].items():
        assert torch.equal(value, ranks[1]["params"][key]), key
    moved = max(float((one["params"][k] - v).abs().max()) for k, v in one["before"].items())
    assert moved > 1e-3
    for key, value in one["params"].items():
        torch.testing.assert_close(ranks[0]["params"][key], value, rtol=1e-4, atol=2e-6, msg=key)
    assert ranks[0]["tokens"] == ranks[1]["tokens"] == one["tokens"]
    for key in ("dpo/loss", "dpo/accuracy", "dpo/margin", "dpo/chosen_reward", "policy/grad_norm"):
        assert ranks[0]["metrics"][key] == pytest.approx(one["metrics"][key], rel=1e-4, abs=1e-6)
        assert ranks[1]["metrics"][key] == ranks[0]["metrics"][key]
    # Rank 0 alone evaluates on the env (eval_every=1), as one process does.
    assert "env/rm_score" in ranks[0]["metrics"] and "env/rm_score" in one["metrics"]
    assert "env/rm_score" not in ranks[1]["metrics"]
    assert ranks[0]["metrics"]["dist/world_size"] == 2 and "dist/world_size" not in one["metrics"]


def test_textenv_train_nproc_2_dpo_then_resume_with_one_process(tmp_path):
    data = _dpo_pairs_file(tmp_path)
    out = tmp_path / "dpo"
    config = dict(num_envs=4, batch_size=8, minibatch_size=4, eval_every=2, eval_prompts=4)
    config.update(progress=False, anneal_lr=False)
    cmd = [sys.executable, "-m", "textenv.cli", "train", "--nproc", "2", "--algo", "dpo"]
    cmd += ["--data", str(data), "--env", "textenv/Tiny-v0", "--total-tokens", "300"]
    cmd += ["--out", str(out), "--config", json.dumps(config)]
    proc = _run(cmd, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("saved dpo agent") == 1  # rank 0 alone prints ...
    rows = [
        json.loads(r) for r in (tmp_path / "dpo-logs" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["iteration"] for r in rows] == list(range(1, len(rows) + 1))  # ... and logs
    assert len(rows) >= 2 and all(r["dist/world_size"] == 2 for r in rows)
    assert "env/rm_score" in rows[0] and "env/rm_score" not in rows[1]  # eval_every=2
    agent = DPO.load(out, progress=False, log_dir=str(tmp_path / "resumed-logs"))
    assert agent.iteration == len(rows) and agent.tokens_seen >= 300
    agent.learn(10**6, iterations=1)
    assert agent.iteration == len(rows) + 1
    agent.close()
