"""The package's GRPO and PPO against TRL's, on the same model, prompts and reward, at 1 thread.

Settings (the same on both sides):

* model: ``builtin:prose`` (the shipped 2-layer × 128 GPT-2, 2000-token byte-level BPE; its
  folder is loaded by path on the TRL side), fp32, no dropout, temperature 1, completions of
  at most 24 tokens (EOS ends one early);
* prompts: the Sentiment-v0 train prompts (``textenv/data/tasks/sentiment/train.jsonl``);
* reward: VADER compound sentiment of the completion (``textenv.tasks.sentiment.gold_score``,
  the same formula on the TRL side), no learned reward model;
* GRPO: 4 prompts × 8 completions per step (32), β = 0.05, lr 5e-5 constant, one gradient
  step per batch (TRL: ``num_iterations=1``; ours: ``epochs=1``, one minibatch of 32);
  TRL latest (its own venv) with ``bf16=False``, ``gradient_checkpointing=False``;
* PPO: 32 prompts per step, 4 epochs × 1 minibatch of 32, β = 0.05 (k1, terminal),
  lr 5e-5 constant; TRL 1.12 (the last release with ``PPOTrainer``, its own venv) with a
  separate value model (TRL's design), the VADER scorer standing in for its reward model;
  ours with its default shared value head.

TRL is never a package dependency: each side runs in its own process (``--worker``), ours in
the project's venv, TRL's in the venv given by ``--trl-python`` / ``--trl-ppo-python``::

    python3 -m venv /work/trlvenv && /work/trlvenv/bin/pip install "torch==2.13.0" trl vadersentiment
    python3 -m venv /work/trlppovenv && /work/trlppovenv/bin/pip install "torch==2.13.0" "trl==1.12.*" vadersentiment

The driver runs the workers one at a time with ``OMP_NUM_THREADS=1`` (and
``torch.set_num_threads(1)``), records the share of the machine's CPUs other processes used
while each ran, and writes ``benchmarks/results/trl_side_by_side.json`` (+ ``.md``, ``.png``).
Each worker reports generated tokens per second of training wall-clock (model loading
excluded), the reward and KL after every step, and where the time went: sampling, reference
forward, reward, value forward (PPO rollout), update forward + loss, backward, optimiser, and
(TRL PPO) ``gc.collect``. Runs already in the results file are skipped (``--force`` reruns).

Usage::

    python benchmarks/trl_side_by_side.py --steps 200            # all four runs
    python benchmarks/trl_side_by_side.py --runs ours-grpo trl-grpo --steps 300
    python benchmarks/trl_side_by_side.py --report                # tables and plot only
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
MODEL_DIR = REPO / "textenv" / "data" / "models" / "prose"
PROMPT_FILE = REPO / "textenv" / "data" / "tasks" / "sentiment" / "train.jsonl"

SETTINGS = {
    "max_new_tokens": 24,
    "temperature": 1.0,
    "beta": 0.05,
    "lr": 5e-5,
    "grpo_prompts": 4,
    "grpo_group": 8,
    "ppo_batch": 32,
    "ppo_epochs": 4,
    "seed": 0,
}
RUNS = {
    "ours-grpo": ("ours", "grpo"),
    "trl-grpo": ("trl", "grpo"),
    "ours-ppo": ("ours", "ppo"),
    "trl-ppo": ("trl", "ppo"),
}
PHASES = (
    "sampling",
    "reference",
    "reward",
    "value",
    "update_forward",
    "backward",
    "optimizer",
    "gc_collect",
    "other",
)


# --------------------------------------------------------------------------- shared helpers


def load_prompts() -> list[str]:
    with open(PROMPT_FILE, encoding="utf-8") as f:
        return [json.loads(line)["prompt"] for line in f if line.strip()]


_VADER = None


def vader(texts: list[str]) -> list[float]:
    """VADER compound of each completion: the formula of ``textenv.tasks.sentiment.gold_score``
    (written out so the TRL venv needs only ``vaderSentiment``)."""
    global _VADER
    if _VADER is None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        _VADER = SentimentIntensityAnalyzer()
    eos = "<|endoftext|>"
    return [float(_VADER.polarity_scores(t.replace(eos, " ").strip())["compound"]) for t in texts]


class Phases:
    """Wall time per phase; ``with phases("reward"):``. Nested phases are subtracted from
    their parent (each second is counted once)."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self._stack: list[list[Any]] = []

    @contextlib.contextmanager
    def __call__(self, name: str):
        entry = [name, time.perf_counter(), 0.0]  # name, start, time of nested phases
        self._stack.append(entry)
        try:
            yield
        finally:
            self._stack.pop()
            elapsed = time.perf_counter() - entry[1]
            self.total[name] += elapsed - entry[2]
            if self._stack:
                self._stack[-1][2] += elapsed

    def wrap(self, obj: Any, attr: str, name: str) -> None:
        """Time every call of ``obj.attr`` as phase ``name``."""
        fn = getattr(obj, attr)

        def timed(*a: Any, **k: Any) -> Any:
            with self(name):
                return fn(*a, **k)

        setattr(obj, attr, timed)

    def hook_module(self, module: Any, name: str) -> None:
        """Time a module's forward passes (pre/post hooks) as phase ``name``."""
        state: list[Any] = []

        def pre(*_: Any) -> None:
            ctx = self(name)
            ctx.__enter__()
            state.append(ctx)

        def post(*_: Any) -> None:
            state.pop().__exit__(None, None, None)

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)


def time_torch_update(phases: Phases) -> None:
    """Time every ``Tensor.backward`` and ``AdamW.step`` in this process."""
    import torch

    backward = torch.Tensor.backward

    def timed_backward(self: Any, *a: Any, **k: Any) -> Any:
        with phases("backward"):
            return backward(self, *a, **k)

    torch.Tensor.backward = timed_backward
    step = torch.optim.AdamW.step

    def timed_step(self: Any, *a: Any, **k: Any) -> Any:
        with phases("optimizer"):
            return step(self, *a, **k)

    torch.optim.AdamW.step = timed_step


def finish_worker(
    out: Path, curve: list[dict], phases: Phases, wall: float, cpu: float, extra: dict
) -> None:
    tokens = sum(p["tokens"] for p in curve)
    timed = sum(phases.total.values())
    phase_s = dict(phases.total)
    phase_s["other"] = phase_s.get("other", 0.0) + max(0.0, wall - timed)
    record = {
        "steps": len(curve),
        "generated_tokens": tokens,
        "train_wall_s": wall,
        "train_cpu_s": cpu,
        "tokens_per_s": tokens / wall,
        "phases_s": phase_s,
        "curve": curve,
        **extra,
    }
    out.write_text(json.dumps(record, indent=1) + "\n")


# --------------------------------------------------------------------------- our side


def worker_ours(algo: str, steps: int, out: Path, overrides: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(1)
    import textenv.env.core as core
    from agents import GRPO, PPO, GRPOConfig, PPOConfig

    s = SETTINGS
    env_kwargs = {
        "reward": "textenv.tasks.sentiment:gold_score",
        "gold": None,  # the reward is the gold scorer: score it once
        "kl_coef": s["beta"],
        "max_new_tokens": s["max_new_tokens"],
        "temperature": s["temperature"],
    }
    common = dict(
        env_id="textenv/Sentiment-v0",
        env_kwargs=env_kwargs,
        lr=s["lr"],
        anneal_lr=False,
        seed=s["seed"],
        progress=False,
    )
    if algo == "grpo":
        n = s["grpo_prompts"] * s["grpo_group"]
        config: Any = GRPOConfig(
            num_envs=n, minibatch_size=n, epochs=1, group_size=s["grpo_group"], beta=s["beta"]
        )
    else:
        n = s["ppo_batch"]
        config = PPOConfig(num_envs=n, minibatch_size=n, epochs=s["ppo_epochs"])
    for k, v in {**common, **overrides}.items():
        setattr(config, k, v)
    agent = (GRPO if algo == "grpo" else PPO)(config)

    phases = Phases()
    if hasattr(core, "sequence_logprobs"):
        phases.wrap(core, "sequence_logprobs", "reference")
    if hasattr(core, "score"):
        phases.wrap(core, "score", "reward")
    time_torch_update(phases)
    collect, update = agent._collect, agent._update

    def timed_collect() -> Any:
        with phases("sampling"):
            return collect()

    def timed_update(rollout: Any) -> Any:
        with phases("update_forward"):
            return update(rollout)

    agent._collect, agent._update = timed_collect, timed_update

    curve = []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        agent.learn(10**12, iterations=1)
        h = agent.history[-1]
        curve.append(
            {
                "step": len(curve) + 1,
                "tokens": int(round(h["env/length"] * n)),
                "reward": h["env/rm_score"],
                "kl_episode": h["env/kl"],
                "kl_k3_token": h.get("grpo/kl_k3", float("nan")),
                "length": h["env/length"],
                "elapsed_s": time.perf_counter() - wall0,
            }
        )
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    settings = {k: v for k, v in config.to_dict().items() if k not in ("log_dir", "progress")}
    agent.close()
    finish_worker(out, curve, phases, wall, cpu, {"settings": settings, "framework": "agents"})


# --------------------------------------------------------------------------- TRL, shared


def trl_args(algo: str, out: Path, n: int, overrides: dict[str, Any], **own: Any) -> dict[str, Any]:
    """The TRL config arguments both TRL workers share (CPU, fp32, constant learning rate, a log
    line every step, nothing saved; batch size, temperature, learning rate and seed from
    SETTINGS), then the algorithm's `own` ones, then --overrides."""
    s = SETTINGS
    args = dict(
        output_dir=str(out.parent / f"trl_{algo}_tmp"),
        per_device_train_batch_size=n,
        gradient_accumulation_steps=1,
        temperature=s["temperature"],
        learning_rate=s["lr"],
        lr_scheduler_type="constant",
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=s["seed"],
        disable_tqdm=True,
        **own,
    )
    args.update(overrides)
    return args


def finish_trl_worker(
    out: Path,
    curve: list[dict],
    phases: Phases,
    wall: float,
    cpu: float,
    args: dict[str, Any],
    **settings: Any,
) -> None:
    """finish_worker for a TRL worker: its settings are the config arguments (less the scratch
    folder) plus the `settings` TRL chose itself, and the framework is this TRL version."""
    import trl

    recorded = {k: v for k, v in args.items() if k != "output_dir"}
    recorded.update(settings)
    extra = {"settings": recorded, "framework": f"trl {trl.__version__}"}
    finish_worker(out, curve, phases, wall, cpu, extra)


# --------------------------------------------------------------------------- TRL GRPO


def worker_trl_grpo(steps: int, out: Path, overrides: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(1)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    s = SETTINGS
    n = s["grpo_prompts"] * s["grpo_group"]
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32)
    dataset = Dataset.from_list([{"prompt": p} for p in load_prompts()])
    phases = Phases()

    def vader_reward(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        with phases("reward"):
            return vader(completions)

    args = trl_args(
        "grpo",
        out,
        n,
        overrides,
        num_generations=s["grpo_group"],
        max_completion_length=s["max_new_tokens"],
        beta=s["beta"],
        max_steps=steps,
        num_iterations=1,
        dataloader_num_workers=0,
    )
    config = GRPOConfig(**args)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=vader_reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    phases.wrap(trainer.model, "generate", "sampling")
    if trainer.ref_model is not None:
        phases.hook_module(trainer.ref_model, "reference")
    time_torch_update(phases)
    score_fn = trainer._generate_and_score_completions

    def timed_score(*a: Any, **k: Any) -> Any:  # tokenising, old log-probs, advantages
        with phases("other_rollout"):
            return score_fn(*a, **k)

    trainer._generate_and_score_completions = timed_score
    compute_loss = trainer.compute_loss

    def timed_loss(*a: Any, **k: Any) -> Any:
        with phases("update_forward"):
            return compute_loss(*a, **k)

    trainer.compute_loss = timed_loss
    curve: list[dict] = []
    clock = {}

    class Log(TrainerCallback):
        def on_train_begin(self, *_: Any, **__: Any) -> None:
            clock["wall0"], clock["cpu0"] = time.perf_counter(), time.process_time()

        def on_log(self, _args: Any, state: Any, control: Any, logs: Any = None, **__: Any) -> None:
            if not logs or "reward" not in logs:
                return
            length = float(logs["completions/mean_length"])
            curve.append(
                {
                    "step": int(state.global_step),
                    "tokens": int(round(length * n)),
                    "reward": float(logs["reward"]),
                    "kl_k3_token": float(logs.get("kl", float("nan"))),
                    "length": length,
                    "elapsed_s": time.perf_counter() - clock["wall0"],
                }
            )

    trainer.add_callback(Log())
    trainer.train()
    wall, cpu = time.perf_counter() - clock["wall0"], time.process_time() - clock["cpu0"]
    # "other_rollout" is what _generate_and_score_completions spent outside generate / ref /
    # reward (tokenising, padding, advantages): count it under sampling, as ours does.
    phases.total["sampling"] += phases.total.pop("other_rollout", 0.0)
    finish_trl_worker(
        out,
        curve,
        phases,
        wall,
        cpu,
        args,
        loss_type=config.loss_type,
        scale_rewards=config.scale_rewards,
        use_bias_correction_kl=getattr(config, "use_bias_correction_kl", None),
        adam_epsilon=config.adam_epsilon,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
    )


# --------------------------------------------------------------------------- TRL PPO


def worker_trl_ppo(steps: int, out: Path, overrides: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(1)

    try:  # TRL ≥ 1.x keeps PPO under trl.experimental
        import trl.experimental.ppo.ppo_trainer as ppo_module
        from trl.experimental.ppo import PPOConfig, PPOTrainer
    except ImportError:
        import trl.trainer.ppo_trainer as ppo_module
        from trl import PPOConfig, PPOTrainer
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )

    s = SETTINGS
    n = s["ppo_batch"]
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    tokenizer.padding_side = "left"
    policy = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32)
    ref_policy = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32)
    value_model = AutoModelForSequenceClassification.from_pretrained(
        MODEL_DIR, num_labels=1, dtype=torch.float32
    )
    value_model.config.pad_token_id = tokenizer.pad_token_id
    # TRL's PPO takes a reward *model*: a placeholder module marks where VADER scores instead.
    reward_model = AutoModelForSequenceClassification.from_pretrained(
        MODEL_DIR, num_labels=1, dtype=torch.float32
    )
    phases = Phases()
    original_get_reward = ppo_module.get_reward

    def get_reward(model: Any, query_responses: Any, pad_token_id: int, context_length: int):
        if model is not reward_model:
            with phases("value"):
                return original_get_reward(model, query_responses, pad_token_id, context_length)
        with phases("reward"):
            responses = query_responses[:, context_length:]
            texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
            scores = torch.tensor(vader(texts), dtype=torch.float32)
            ends = ppo_module.first_true_indices(responses == pad_token_id) - 1 + context_length
            return None, scores, ends

    ppo_module.get_reward = get_reward
    prompts = load_prompts()
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    dataset = Dataset.from_list([{"input_ids": x} for x in ids])
    args = trl_args(
        "ppo",
        out,
        n,
        overrides,
        num_mini_batches=1,
        num_ppo_epochs=s["ppo_epochs"],
        total_episodes=steps * n,
        response_length=s["max_new_tokens"],
        kl_coef=s["beta"],
        num_sample_generations=0,
        stop_token="eos",
    )
    config = PPOConfig(**args)
    trainer = PPOTrainer(
        args=config,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref_policy,
        reward_model=reward_model,
        train_dataset=dataset,
        value_model=value_model,
        eval_dataset=dataset.select(range(8)),
    )
    phases.wrap(policy, "generate", "sampling")
    phases.hook_module(ref_policy, "reference")
    phases.wrap(ppo_module, "forward", "update_forward")
    collect = gc.collect

    def timed_collect(*a: Any, **k: Any) -> Any:
        with phases("gc_collect"):
            return collect(*a, **k)

    gc.collect = timed_collect
    ppo_module.gc.collect = timed_collect
    time_torch_update(phases)
    curve: list[dict] = []
    clock = {"wall0": time.perf_counter(), "cpu0": time.process_time()}

    class Log(TrainerCallback):
        def on_log(self, _args: Any, state: Any, control: Any, logs: Any = None, **__: Any) -> None:
            if not logs or "objective/scores" not in logs:
                return
            # TRL logs the mean *response* length only through eps; count from the rollout.
            length = float(logs.get("val/num_eos_tokens", 0.0))
            curve.append(
                {
                    "step": len(curve) + 1,
                    "tokens": tokens_seen.pop(0) if tokens_seen else 0,
                    "reward": float(logs["objective/scores"]),
                    "kl_episode": float(logs["objective/kl"]),
                    "num_eos": length,
                    "elapsed_s": time.perf_counter() - clock["wall0"],
                }
            )

    # Generated tokens per rollout: count the responses' non-pad tokens as TRL truncates them.
    tokens_seen: list[int] = []
    truncate = ppo_module.truncate_response

    def counting_truncate(stop_token_id: int, pad_token_id: int, responses: Any) -> Any:
        out_ = truncate(stop_token_id, pad_token_id, responses)
        first_pad = ppo_module.first_true_indices(out_ == pad_token_id)
        # the EOS is generated too: count it where it ended the response
        tokens_seen.append(int((first_pad + (first_pad < out_.shape[1]).long()).sum()))
        return out_

    ppo_module.truncate_response = counting_truncate
    trainer.add_callback(Log())
    clock["wall0"], clock["cpu0"] = time.perf_counter(), time.process_time()
    trainer.train()
    wall, cpu = time.perf_counter() - clock["wall0"], time.process_time() - clock["cpu0"]
    finish_trl_worker(
        out,
        curve,
        phases,
        wall,
        cpu,
        args,
        kl_estimator=getattr(config, "kl_estimator", "k1"),
        value_model="separate",
    )


# --------------------------------------------------------------------------- driver


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def _code_version() -> str:
    """The commit the run measured (``+dirty`` when the package's sources differ from it)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "agents", "textenv"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def run_worker(name: str, steps: int, python: str, overrides: dict[str, Any]) -> dict:
    """One worker in its own process at one thread; returns its record plus the share of the
    machine's CPUs that other processes used meanwhile."""
    sys.path.insert(0, str(HERE))
    from common import machine_busy_seconds, wait_for_quiet

    quiet_before = wait_for_quiet(120)
    out = RESULTS / f".trl_side_by_side_{name}.{os.getpid()}.json"  # one per driver
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [python, str(Path(__file__).resolve()), "--worker", name, "--steps", str(steps)]
    cmd += ["--worker-out", str(out), "--overrides", json.dumps(overrides)]
    wall0, busy0, child0 = time.perf_counter(), machine_busy_seconds(), _children_cpu()
    subprocess.run(cmd, check=True, env=env, cwd=REPO)
    wall = time.perf_counter() - wall0
    child = _children_cpu() - child0
    others = max(0.0, machine_busy_seconds() - busy0 - child) / (wall * (os.cpu_count() or 1))
    record = json.loads(out.read_text())
    out.unlink()
    record.update(
        others_cpu_share=others,
        others_cpu_share_before=quiet_before,
        process_wall_s=wall,
        command=" ".join(cmd[:1] + [Path(cmd[1]).name] + cmd[2:]),
        python=python,
        code=_code_version(),
        overrides=overrides,
        finished=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    return record


def _window(curve: list[dict], key: str, frac: float = 0.1) -> float:
    """Mean of ``key`` over the last ``frac`` of the steps."""
    import numpy as np

    k = max(1, int(round(len(curve) * frac)))
    return float(np.mean([p[key] for p in curve[-k:]]))


def _smooth(values: list[float], k: int = 10) -> list[float]:
    import numpy as np

    v = np.asarray(values, dtype=float)
    k = max(1, min(k, len(v)))
    out = np.convolve(v, np.ones(k) / k, mode="valid")
    return [float(x) for x in np.concatenate([np.full(len(v) - len(out), np.nan), out])]


def reward_at_kl(curve: list[dict], kl: float, key: str = "kl_k3_token") -> float | None:
    """Reward (10-step moving mean) where the run's 10-step moving-mean KL first reaches
    ``kl`` (linear interpolation); None if it never does."""
    r, k = _smooth([p["reward"] for p in curve]), _smooth([p[key] for p in curve])
    for i in range(1, len(k)):
        if k[i - 1] == k[i - 1] and k[i - 1] < kl <= k[i]:  # (NaN-safe)
            w = (kl - k[i - 1]) / (k[i] - k[i - 1])
            return r[i - 1] + w * (r[i] - r[i - 1])
    return None


def summarise(data: dict) -> dict:
    runs = data["runs"]
    rows: dict[str, Any] = {}
    for name, rec in runs.items():
        c = rec["curve"]
        ph = rec["phases_s"]
        total = sum(ph.values())
        rows[name] = {
            "framework": rec["framework"],
            "steps": rec["steps"],
            "tokens_per_s": rec["tokens_per_s"],
            "tokens_per_cpu_s": rec["generated_tokens"] / rec["train_cpu_s"],
            "train_wall_s": rec["train_wall_s"],
            "reward_start": sum(p["reward"] for p in c[:10]) / min(10, len(c)),
            "reward_end": _window(c, "reward"),
            "kl_end": _window(c, "kl_k3_token" if "grpo" in name else "kl_episode"),
            "phase_share": {k: v / total for k, v in ph.items() if v > 0},
            "others_cpu_share": rec["others_cpu_share"],
            "code": rec.get("code", ""),
        }
    for algo in ("grpo", "ppo"):
        ours, trl = rows.get(f"ours-{algo}"), rows.get(f"trl-{algo}")
        if ours and trl:
            rows[f"speedup_{algo}"] = ours["tokens_per_s"] / trl["tokens_per_s"]
            rows[f"speedup_cpu_{algo}"] = ours["tokens_per_cpu_s"] / trl["tokens_per_cpu_s"]
        for name, row in rows.items():  # every run of ours (ablations, earlier code) vs TRL
            if trl and name.startswith(f"ours-{algo}") and isinstance(row, dict):
                row["vs_trl"] = row["tokens_per_s"] / trl["tokens_per_s"]
                row["vs_trl_cpu"] = row["tokens_per_cpu_s"] / trl["tokens_per_cpu_s"]
    for name, rec in runs.items():  # GRPO at matched KL: ours at the KL TRL ends at
        if name.startswith("ours-grpo") and "trl-grpo" in rows:
            kl = rows["trl-grpo"]["kl_end"]
            rows[name]["reward_at_trl_final_kl"] = reward_at_kl(rec["curve"], kl)
    return rows


def markdown(data: dict) -> str:
    s = data["summary"]
    lines = [
        "| run | framework | code | steps | generated tokens / s | tokens / CPU s "
        "| reward: first 10 → last 10% steps "
        "| KL, last 10% (GRPO: per-token k3; PPO: nats / episode) | others' CPU |",
        "|---|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for name, r in s.items():
        if name.startswith("speedup"):
            continue
        lines.append(
            f"| {name} | {r['framework']} | {r.get('code') or '—'} | {r['steps']} "
            f"| {r['tokens_per_s']:.0f} "
            f"| {r['tokens_per_cpu_s']:.0f} "
            f"| {r['reward_start']:.3f} → {r['reward_end']:.3f} | {r['kl_end']:.2f} "
            f"| {r['others_cpu_share']:.0%} |"
        )
    for algo in ("grpo", "ppo"):
        if f"speedup_{algo}" in s:
            lines.append(
                f"\n{algo.upper()} speed-up (ours / TRL): **{s[f'speedup_{algo}']:.2f}×** in "
                f"generated tokens per wall-clock second, {s[f'speedup_cpu_{algo}']:.2f}× per "
                "CPU second"
            )
    lines.append("\nWhere the time goes (share of training wall-clock):\n")
    lines.append("| run | " + " | ".join(PHASES) + " |")
    lines.append("|---|" + "---:|" * len(PHASES))
    for name, r in s.items():
        if name.startswith("speedup"):
            continue
        sh = r["phase_share"]
        lines.append(f"| {name} | " + " | ".join(f"{sh.get(p, 0):.0%}" for p in PHASES) + " |")
    return "\n".join(lines) + "\n"


def plot(data: dict, path: Path) -> None:
    sys.path.insert(0, str(HERE))
    import matplotlib
    import numpy as np
    from common import save_figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, rec in sorted(data["runs"].items()):
        c = rec["curve"]
        speed = rec["generated_tokens"] / rec["train_cpu_s"]
        label = f"{name} ({rec['framework']}, {speed:.0f} tok / CPU s)"
        ax = axes[0] if "grpo" in name else axes[1]
        seen = np.cumsum([p["tokens"] for p in c])
        ax.plot(seen, _smooth([p["reward"] for p in c]), label=label)
        if "grpo" in name:
            axes[2].plot(
                _smooth([p["kl_k3_token"] for p in c]),
                _smooth([p["reward"] for p in c]),
                label=name,
            )
    axes[0].set_title("GRPO: reward per generated token (speed in the legend)")
    axes[1].set_title("PPO: reward per generated token (speed in the legend)")
    axes[2].set_title("GRPO: reward vs per-token k3 KL (trajectory)")
    for ax in axes[:2]:
        ax.set_xlabel("generated tokens")
    axes[2].set_xlabel("per-token k3 KL (10-step mean)")
    for ax in axes:
        ax.set_ylabel("VADER reward (10-step mean)")
    save_figure(fig, axes, path)


def report(path: Path, data: dict) -> None:
    sys.path.insert(0, str(HERE))
    from common import ResultsFile

    data["summary"] = summarise(data)
    data["table_md"] = markdown(data)
    res = ResultsFile(path, data)
    res.data = data
    res.save()
    path.with_suffix(".md").write_text(data["table_md"])
    plot(data, path.with_suffix(".png"))
    print(data["table_md"], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--trl-python", default="/work/trlvenv/bin/python")
    parser.add_argument("--trl-ppo-python", default="/work/trlppovenv/bin/python")
    parser.add_argument("--name", help="store the run under this name (e.g. an ablation)")
    parser.add_argument("--overrides", default="{}", help="JSON of config fields to override")
    parser.add_argument("--force", action="store_true", help="rerun runs already in the file")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "trl_side_by_side.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    overrides = json.loads(args.overrides)
    if args.worker:
        side, algo = RUNS[args.worker]
        if side == "ours":
            worker_ours(algo, args.steps, args.worker_out, overrides)
        elif algo == "grpo":
            worker_trl_grpo(args.steps, args.worker_out, overrides)
        else:
            worker_trl_ppo(args.steps, args.worker_out, overrides)
        return
    data = json.loads(args.out.read_text()) if args.out.exists() else {"runs": {}}
    if not args.report:
        sys.path.insert(0, str(HERE))
        from common import machine_info

        data["machine"] = machine_info()
        data["settings"] = SETTINGS
        for run in args.runs:
            key = args.name if args.name and len(args.runs) == 1 else run
            if key in data["runs"] and not args.force:
                print(f"{key}: already in {args.out.name}, skipped", flush=True)
                continue
            side, algo = RUNS[run]
            python = sys.executable
            if side == "trl":
                python = args.trl_python if algo == "grpo" else args.trl_ppo_python
            print(f"{key}: {args.steps} steps ...", flush=True)
            data["runs"][key] = run_worker(run, args.steps, python, overrides)
            report(args.out, data)
    report(args.out, data)


if __name__ == "__main__":
    main()
