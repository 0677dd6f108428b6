"""``agents.DPO`` against TRL's ``DPOTrainer`` on the same model, pairs and settings, at 1 thread.

Settings (the same on both sides):

* model: ``builtin:sort`` (Sort-v0's reference, a small GPT-2 shipped with the package; its folder
  is loaded by path on the TRL side), fp32, no dropout; it is also the frozen reference;
* pairs: the 1000 training pairs of ``compare_dpo.py`` (k = 4 reference samples per Sort-v0
  train prompt, labelled by the gold scorer with Bradley–Terry noise T = 0.05, ties skipped);
* DPO loss (sigmoid), β = 0.1, lr 1e-4 decayed linearly to 0, AdamW without weight decay,
  32 pairs per gradient step, 2 epochs, gradient-norm clip 1.0;
* TRL (latest, its own venv; never a package dependency) with ``bf16=False``,
  ``gradient_checkpointing=False``, ``use_cpu=True``, ``precompute_ref_log_probs=False`` (its
  default: the reference runs every step; ours caches the reference's log-probs once, which is
  part of what is compared).

The encodings differ as each library does it: TRL tokenizes prompt + completion together and
always appends EOS; ``agents.DPO`` encodes them as the env encodes episodes (EOS appended to a
completion shorter than ``max_new_tokens``, which all Sort completions are).

Measured after training, by the same code for both policies: the implicit reward's accuracy on
held-out pairs of eval prompts in the gold order (``DPO.evaluate_pairs``, reference =
``builtin:sort``; ties ½), and gold score and KL(π ‖ ρ) on 256 held-out Sort-v0 prompts
(:func:`agents.evaluation.evaluate`, the env's k1 estimate per episode). Speed: completion tokens
trained on (chosen + rejected, EOS included, × epochs) per second of training wall-clock and
per CPU-second of the worker (model loading excluded); the share of the machine's CPUs other
processes used is recorded.

Usage::

    python3 -m venv /work/trlvenv && /work/trlvenv/bin/pip install "torch==2.13.0" trl
    OMP_NUM_THREADS=1 python benchmarks/dpo_vs_trl.py --trl-python /work/trlvenv/bin/python
    python benchmarks/dpo_vs_trl.py --report      # the table from the results file

Writes ``benchmarks/results/dpo_vs_trl.json`` and ``.md``; sides already there are skipped
(``--force`` reruns them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "dpo_vs_trl.json"
SETTINGS = dict(beta=0.1, lr=1e-4, batch=32, epochs=2, max_grad_norm=1.0, seed=0)
ENV_ID = "textenv/Sort-v0"


def _completion_tokens(tokenizer, rows: list[dict], with_eos: bool) -> int:
    n = 0
    for r in rows:
        for key in ("chosen", "rejected"):
            n += len(tokenizer(r[key], add_special_tokens=False)["input_ids"]) + int(with_eos)
    return n


# --------------------------------------------------------------------------- workers


def worker_ours(pairs: str, out: Path) -> dict:
    import torch
    from common import CPUClock

    from agents import DPO, DPOConfig

    torch.set_num_threads(1)
    s = SETTINGS
    agent = DPO(
        DPOConfig(
            env_id=ENV_ID,
            data=pairs,
            beta=s["beta"],
            lr=s["lr"],
            batch_size=s["batch"],
            minibatch_size=s["batch"],
            max_grad_norm=s["max_grad_norm"],
            seed=s["seed"],
            eval_every=0,
            progress=False,
        )
    )
    with CPUClock() as clock:
        agent.learn(passes=s["epochs"])
    agent.policy.model.save_pretrained(out)
    agent.policy.tokenizer.save_pretrained(out)
    tokens = agent.tokens_seen
    return {
        "train_wall_s": clock.wall,
        "train_cpu_s": clock.cpu,
        "others_cpu_share": clock.others_share,
        "steps": agent.iteration,
        "completion_tokens": tokens,
        "final_loss": agent.history[-1]["dpo/loss"],
        "version": "agents.DPO",
    }


def worker_trl(pairs: str, out: Path, model_dir: str) -> dict:
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    sys.path.insert(0, str(HERE))
    from common import CPUClock

    torch.set_num_threads(1)
    s = SETTINGS
    rows = [json.loads(line) for line in open(pairs, encoding="utf-8")]
    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    with tempfile.TemporaryDirectory() as tmp:
        config = DPOConfig(
            output_dir=tmp,
            beta=s["beta"],
            loss_type="sigmoid",
            learning_rate=s["lr"],
            lr_scheduler_type="linear",
            warmup_steps=0,
            weight_decay=0.0,
            per_device_train_batch_size=s["batch"],
            num_train_epochs=s["epochs"],
            max_grad_norm=s["max_grad_norm"],
            seed=s["seed"],
            bf16=False,
            use_cpu=True,
            gradient_checkpointing=False,
            disable_dropout=True,
            report_to="none",
            save_strategy="no",
            logging_steps=10,
            dataloader_num_workers=0,
        )
        trainer = DPOTrainer(
            model=model,
            args=config,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
        with CPUClock() as clock:
            result = trainer.train()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {
        "train_wall_s": clock.wall,
        "train_cpu_s": clock.cpu,
        "others_cpu_share": clock.others_share,
        "steps": int(result.global_step),
        "completion_tokens": _completion_tokens(tokenizer, rows, True) * s["epochs"],
        "final_loss": float(result.training_loss),
        "version": f"trl {trl.__version__}",
    }


# --------------------------------------------------------------------------- driver


def measure(model_dir: Path, pairs: dict[str, Path]) -> dict:
    """The same measurements for both policies."""
    import torch

    from agents import DPO, DPOConfig
    from agents.evaluation import evaluate
    from textenv.tasks.sort import TASK

    torch.set_num_threads(1)
    agent = DPO(
        DPOConfig(
            env_id=ENV_ID,
            model=str(model_dir),
            data=str(pairs["train"]),
            beta=SETTINGS["beta"],
            eval_every=0,
            progress=False,
        )
    )
    held = agent.evaluate_pairs(str(pairs["heldout"]))
    agent.close()
    ev = evaluate(str(model_dir), ENV_ID, n_prompts=256, seed=1234, reward=TASK.gold)
    return {
        "heldout_accuracy": held["accuracy"],
        "heldout_accuracy_sem": held["accuracy_sem"],
        "heldout_pairs": int(held["n"]),
        **{k: ev.metrics[k].mean for k in ("gold_score", "kl")},
        **{k + "_sem": ev.metrics[k].sem for k in ("gold_score", "kl")},
    }


def markdown(data: dict) -> str:
    lines = [
        "| side | steps | held-out pair acc. | gold | KL (nats) | completion tok / s "
        "| tok / CPU s | others' CPU |",
        "|---|---:|---|---|---|---:|---:|---:|",
    ]
    ref = data.get("reference")
    if ref:
        lines.append(
            f"| reference (builtin:sort) | 0 | 0.500 | {ref['gold_score']:.3f} ± "
            f"{ref['gold_score_sem']:.3f} | 0 | — | — | — |"
        )
    for side in ("ours", "trl"):
        r = data["sides"].get(side)
        if not r:
            continue
        lines.append(
            f"| {r['version']} | {r['steps']} | {r['heldout_accuracy']:.3f} ± "
            f"{r['heldout_accuracy_sem']:.3f} | {r['gold_score']:.3f} ± {r['gold_score_sem']:.3f}"
            f" | {r['kl']:.2f} ± {r['kl_sem']:.2f} | "
            f"{r['completion_tokens'] / r['train_wall_s']:.0f} | "
            f"{r['completion_tokens'] / r['train_cpu_s']:.0f} | {r['others_cpu_share']:.0%} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trl-python", default="/work/trlvenv/bin/python")
    parser.add_argument("--sides", nargs="+", default=["ours", "trl"], choices=["ours", "trl"])
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "dpo_vs_trl")
    parser.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--pairs", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--stats", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    if args.worker:  # one side, in its own process (and venv)
        out = Path(args.stats).with_name(args.worker)
        if args.worker == "ours":
            stats = worker_ours(args.pairs, out)
        else:
            stats = worker_trl(args.pairs, out, args.model_dir)
        Path(args.stats).write_text(json.dumps(stats))
        return

    from common import ResultsFile, machine_info
    from compare_dpo import pairs_for

    res = ResultsFile(RESULTS, {"sides": {}})
    data = res.data
    if not args.report:
        from textenv.lm.models import BUILTIN_MODELS_DIR

        ns = argparse.Namespace(
            dpo_pairs=1000,
            dpo_train_prompts=2500,
            dpo_heldout_prompts=500,
            dpo_work=Path(tempfile.gettempdir()) / "textenv_dpo_bench",
        )
        pairs = pairs_for("sort", "textenv.tasks.sort", ns)
        model_dir = str(BUILTIN_MODELS_DIR / "sort")
        args.work.mkdir(parents=True, exist_ok=True)
        data.update(machine=machine_info(), settings={**SETTINGS, "pairs": str(pairs["train"])})
        if "reference" not in data or args.force:
            data["reference"] = measure(Path(model_dir), pairs)
        for side in args.sides:
            if side in data["sides"] and not args.force:
                continue
            python = sys.executable if side == "ours" else args.trl_python
            stats = args.work / "stats.json"
            cmd = [python, __file__, "--worker", side, "--pairs", str(pairs["train"])]
            cmd += ["--model-dir", model_dir, "--stats", str(stats)]
            env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, cwd=str(HERE.parent))
            rec = json.loads(stats.read_text())
            rec["worker_wall_s"] = time.perf_counter() - t0
            rec.update(measure(args.work / side, pairs))
            data["sides"][side] = rec
            res.save()
            print(f"[{side}] {rec}", flush=True)
    data["table_md"] = markdown(data)
    res.save()
    RESULTS.with_suffix(".md").write_text(data["table_md"])
    print(data["table_md"])


if __name__ == "__main__":
    main()
