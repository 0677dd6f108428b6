"""Mutation score of the core: how many small injected bugs the tests catch.

Runs mutmut (``pip install mutmut``, 3.x; settings in ``[tool.mutmut]`` of pyproject.toml) on one
module set at a time, with a fast test subset, in a scratch copy of the working tree (so the
checkout stays untouched and sets can run one after another), and reports

    score = killed / (total − equivalent)

per module, where a timeout counts as killed (the bug was noticed), "no tests" and "suspicious"
as not killed, and *equivalent* mutants (no behaviour changed: no test could kill them) are the
ones listed as such in ``benchmarks/mutation_survivors.txt``. That file also lists *accepted*
survivors (a real change we choose not to test, with the reason); they stay in the denominator.
A listed mutant that no longer survives is reported as stale.

    python benchmarks/mutation_score.py --set losses            # one preset (see SETS)
    python benchmarks/mutation_score.py --set kl --functions '*kl_estimate*'
    python benchmarks/mutation_score.py --modules textenv/env/kl.py --tests tests/test_kl.py

Mutation runs are CPU-heavy: on a shared machine run one at a time, in the background, e.g.
``nohup python benchmarks/mutation_score.py --set core > core.log 2>&1 &``. Results go to
``benchmarks/results/mutation/<set>.json``; ``--reuse`` keeps an earlier scratch copy and its
verdicts (mutmut runs only mutants without one); ``--rerun-survivors`` reruns only the earlier
survivors against the checkout's current tests (after adding tests that should kill them).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SURVIVORS_FILE = ROOT / "benchmarks" / "mutation_survivors.txt"
RESULTS_DIR = ROOT / "benchmarks" / "results" / "mutation"
SCRATCH_DIR = ROOT / "benchmarks" / "results" / "tmp" / "mutation"

# Module sets: the modules mutated, the tests that may kill them (fast ones), and optionally
# the functions scored (mutmut names: module.x_function / module.xǁClassǁmethod, glob patterns).
SETS: dict[str, dict[str, list[str]]] = {
    "kl": {
        "modules": ["textenv/env/kl.py"],
        "tests": ["tests/test_kl.py", "tests/test_env_edges.py"],
        # The estimators and the β controllers (the module also holds the log π channel's
        # input checks and messages, which the env tests cover).
        "functions": [
            "textenv.env.kl.x_kl_estimate*",
            "textenv.env.kl.xǁFixedKLControllerǁ*",
            "textenv.env.kl.xǁAdaptiveKLControllerǁ*",
            "textenv.env.kl.x__check_coef*",
            "textenv.env.kl.x_make_kl_controller*",
        ],
    },
    "core": {
        "modules": ["textenv/env/core.py"],
        "tests": [
            "tests/test_env_edges.py",
            "tests/test_env.py",
            "tests/test_env_core_mutants.py",
            "tests/test_env_lockstep.py",
            "tests/test_vector_bookkeeping.py",
        ],
    },
    "row_streams": {
        "modules": ["textenv/env/row_seeds.py"],
        "tests": ["tests/test_row_seeds.py"],
    },
    "rewards": {
        "modules": ["textenv/rewards/base.py"],
        "tests": [
            "tests/test_rewards_base.py",
            "tests/test_reward_capabilities.py",
            "tests/test_robustness.py",
            "tests/test_env.py",
        ],
    },
    "losses": {
        "modules": ["agents/ppo.py", "agents/grpo.py", "agents/rloo.py"],
        "tests": ["tests/test_losses.py"],
        # The loss and advantage functions and the value model's use; _update's bookkeeping
        # (logged statistics) is not part of the score.
        "functions": [
            "agents.ppo.x_gae*",
            "agents.ppo.x_clipped_policy_loss*",
            "agents.ppo.x_clipped_value_loss*",
            "agents.ppo.xǁPPOǁ_score*",
            "agents.grpo.x_grpo_loss*",
            "agents.grpo.x_group_advantages*",
            "agents.rloo.x_leave_one_out_advantages*",
        ],
    },
    "dpo": {
        "modules": ["agents/dpo.py"],
        # The losses by hand and the agent's loss against a manual forward (fast); the learning
        # tests and the controls are too slow to run per mutant.
        "tests": [
            "tests/test_dpo.py::test_sigmoid_loss_by_hand",
            "tests/test_dpo.py::test_label_smoothing_by_hand",
            "tests/test_dpo.py::test_ipo_loss_by_hand",
            "tests/test_dpo.py::test_loss_gradient_flows_the_implicit_rewards_are_detached",
            "tests/test_dpo.py::test_accuracy_counts_ties_as_half",
            "tests/test_dpo.py::test_pairs_encoded_as_episodes_by_hand",
            "tests/test_dpo.py::test_completions_get_no_special_tokens_and_every_cut_is_counted",
            "tests/test_dpo.py::test_agent_loss_matches_hand_computation",
        ],
        # The DPO / IPO / cDPO loss, its accuracy, and what it is computed from: the pairs
        # encoded as episodes and the per-completion log-probs (summed, or averaged for IPO).
        # The data stream, training loop and evaluation are covered by the learning tests.
        "functions": [
            "agents.dpo.x_dpo_loss*",
            "agents.dpo.x__accuracy*",
            "agents.dpo.x_encode_pairs*",
            "agents.dpo.xǁDPOǁ_logps*",
            "agents.dpo.xǁDPOǁ_loss*",
        ],
    },
    "reward_model": {
        "modules": ["textenv/training/bradley_terry.py"],
        "tests": ["tests/test_losses.py", "tests/test_reward_data.py"],
        # The loss, its loop and metrics, and the data they train on: the split by prompt and
        # the stored normalisation (the config checks and the file helpers are not scored).
        "functions": [
            "textenv.training.bradley_terry.x_fit_bradley_terry*",
            "textenv.training.bradley_terry.x_pair_metrics*",
            "textenv.training.bradley_terry.x_margins*",
            "textenv.training.bradley_terry.x__evaluate*",
            "textenv.training.bradley_terry.x_split_by_prompt*",
            "textenv.training.bradley_terry.x_training_pairs*",
            "textenv.training.bradley_terry.x_reward_normalisation*",
        ],
    },
}

KILLED = {"killed", "timeout", "segfault", "caught by type check"}


def _status(code: int | None) -> str:
    from mutmut.stats import status_by_exit_code

    return status_by_exit_code[code]


def read_survivor_list(path: Path = SURVIVORS_FILE) -> list[dict[str, str]]:
    """Entries ``<mutant name or glob> | equivalent|accepted | why`` (``#`` starts a comment)."""
    entries = []
    if not path.is_file():
        return entries
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|", 2)]
        if len(parts) != 3 or parts[1] not in ("equivalent", "accepted") or not parts[2]:
            raise ValueError(
                f"{path}:{n}: expected '<mutant> | equivalent|accepted | why', got {raw!r}"
            )
        entries.append({"pattern": parts[0], "kind": parts[1], "why": parts[2], "line": str(n)})
    return entries


def _scratch_copy(dest: Path) -> None:
    """The working tree as git sees it (tracked + untracked, not ignored) copied to ``dest``."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in files:
        rel = raw.decode()
        if not rel or rel.startswith("benchmarks/results/"):
            continue
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _toml_value(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False)  # strings, lists of strings, numbers, booleans


def _write_config(dest: Path, modules: list[str], tests: list[str]) -> dict[str, Any]:
    """The checkout's ``[tool.mutmut]`` with ``only_mutate`` and the tests replaced."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    base = dict(tomllib.loads(text).get("tool", {}).get("mutmut", {}))
    base.update(only_mutate=modules, pytest_add_cli_args_test_selection=tests)
    base["use_git_change_detection"] = False  # the scratch copy has no .git
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)
    section = "\n".join(f"{k} = {_toml_value(v)}" for k, v in base.items())
    (dest / "pyproject.toml").write_text(text.rstrip() + "\n\n[tool.mutmut]\n" + section + "\n")
    return base


def _diff(workdir: Path, name: str) -> str:
    out = subprocess.run(
        ["mutmut", "show", name], cwd=workdir, capture_output=True, text=True, check=False
    ).stdout
    return "\n".join(
        line
        for line in out.splitlines()
        if line.startswith(("-", "+")) and line[:3] not in ("---", "+++")
    )


def _refresh_for_rerun(workdir: Path, modules: list[str], functions: list[str] | None) -> list[str]:
    """Copy the checkout's current tests into the scratch copy, drop mutmut's test-coverage
    stats (new tests must be mapped to the functions they reach) and name the survivors.

    The mutated modules must not have changed since the first run (mutant names would shift)."""
    for module in modules:
        if (ROOT / module).read_bytes() != (workdir / module).read_bytes():
            raise SystemExit(f"{module} changed since the first run: run afresh (no --reuse)")
    shutil.copytree(ROOT / "tests", workdir / "tests", dirs_exist_ok=True)
    (workdir / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    survivors = []
    for module in modules:
        meta = json.loads((workdir / "mutants" / (module + ".meta")).read_text())
        for key, code in meta["exit_code_by_key"].items():
            if functions and not any(fnmatch.fnmatch(key, p) for p in functions):
                continue
            if _status(code) not in KILLED:
                survivors.append(key)
    return survivors


def run_set(
    name: str,
    modules: list[str],
    tests: list[str],
    functions: list[str] | None,
    *,
    max_children: int,
    reuse: bool,
    rerun_survivors: bool = False,
    rerun_only: list[str] | None = None,
) -> dict[str, Any]:
    workdir = SCRATCH_DIR / name
    if workdir.exists() and not (reuse or rerun_survivors):
        shutil.rmtree(workdir)
    if not workdir.exists():
        if rerun_survivors:
            raise SystemExit(f"nothing to rerun: no earlier run in {workdir}")
        workdir.mkdir(parents=True)
        _scratch_copy(workdir)
    config = _write_config(workdir, modules, tests)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    targets = list(functions or [])
    if rerun_survivors:
        targets = _refresh_for_rerun(workdir, modules, rerun_only or functions)
        if not targets:
            print("no survivors to rerun")
    cmd = ["mutmut", "run", "--max-children", str(max_children), *targets]
    started = time.perf_counter()
    log = workdir / "mutmut.log"
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=workdir, env=env, stdout=f, stderr=subprocess.STDOUT)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"mutmut run failed (exit {proc.returncode}); end of {log}:\n{tail}")

    verdicts: dict[str, str] = {}
    for module in modules:
        meta = workdir / "mutants" / (module + ".meta")
        if not meta.is_file():
            raise SystemExit(f"no mutmut results for {module} ({meta} missing)")
        for key, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if functions and not any(fnmatch.fnmatch(key, p) for p in functions):
                continue
            verdicts[key] = _status(code)

    listed = read_survivor_list()
    per_module: dict[str, dict[str, Any]] = {}
    survivors, stale = [], []
    for module in modules:
        dotted = module.removesuffix(".py").replace("/", ".")
        keys = [k for k in verdicts if k.startswith(dotted + ".")]
        counts = Counter(verdicts[k] for k in keys)
        killed = sum(counts[s] for s in KILLED)
        equivalent = accepted = 0
        for key in keys:
            entry = next((e for e in listed if fnmatch.fnmatch(key, e["pattern"])), None)
            if verdicts[key] in KILLED:
                if entry is not None:
                    stale.append({"mutant": key, **entry})
                continue
            kind = entry["kind"] if entry else "unexplained"
            equivalent += kind == "equivalent"
            accepted += kind == "accepted"
            survivors.append(
                {
                    "mutant": key,
                    "status": verdicts[key],
                    "kind": kind,
                    "why": entry["why"] if entry else "",
                    "diff": _diff(workdir, key),
                }
            )
        scored = len(keys) - equivalent
        per_module[module] = {
            "total": len(keys),
            "killed": killed,
            "equivalent": equivalent,
            "accepted": accepted,
            "unexplained": len(keys) - killed - equivalent - accepted,
            "counts": dict(counts),
            "score": killed / scored if scored else float("nan"),
        }
    return {
        "set": name,
        "command": " ".join(sys.argv),
        "modules": modules,
        "tests": tests,
        "functions": functions,
        "mutmut_config": config,
        "seconds": elapsed,
        "per_module": per_module,
        "survivors": survivors,
        "stale_list_entries": stale,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=sorted(SETS), help="a preset module set")
    parser.add_argument("--modules", nargs="+", help="modules to mutate (instead of a preset)")
    parser.add_argument("--tests", nargs="+", help="test files or node ids to run")
    parser.add_argument("--functions", nargs="+", help="score only mutants matching these globs")
    parser.add_argument("--name", help="results name (default: the set, or 'custom')")
    parser.add_argument("--max-children", type=int, default=1, help="parallel mutants (default 1)")
    parser.add_argument("--reuse", action="store_true", help="keep the scratch copy and verdicts")
    parser.add_argument(
        "--rerun-survivors",
        action="store_true",
        help="rerun only the earlier run's survivors against the checkout's current tests",
    )
    parser.add_argument(
        "--rerun-only",
        nargs="+",
        help="with --rerun-survivors: only survivors matching these globs",
    )
    args = parser.parse_args(argv)
    if not args.set and not args.modules:
        parser.error("give --set or --modules")
    preset = SETS.get(args.set or "", {})
    modules = args.modules or preset["modules"]
    tests = args.tests or preset.get("tests") or parser.error("give --tests for --modules")
    functions = args.functions or preset.get("functions")
    for path in [*modules, *(t.split("::")[0] for t in tests)]:
        if not (ROOT / path).exists():
            parser.error(f"no such file: {path}")
    name = args.name or args.set or "custom"
    result = run_set(
        name,
        modules,
        tests,
        functions,
        max_children=args.max_children,
        reuse=args.reuse,
        rerun_survivors=args.rerun_survivors,
        rerun_only=args.rerun_only,
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{name}.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, out)

    print(f"mutation score, set {name!r} ({result['seconds']:.0f} s), tests: {' '.join(tests)}")
    print(f"{'module':38s} {'total':>5s} {'killed':>6s} {'equiv':>5s} {'accept':>6s} "
          f"{'unexpl':>6s} {'score':>6s}")  # fmt: skip
    for module, m in result["per_module"].items():
        print(
            f"{module:38s} {m['total']:5d} {m['killed']:6d} {m['equivalent']:5d} "
            f"{m['accepted']:6d} {m['unexplained']:6d} {m['score']:6.1%}"
        )
    for s in result["survivors"]:
        if s["kind"] == "unexplained":
            print(f"\nSURVIVED ({s['status']}): {s['mutant']}\n{s['diff']}")
    for s in result["stale_list_entries"]:
        print(f"stale entry (now killed): {s['mutant']} (survivors file line {s['line']})")
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
