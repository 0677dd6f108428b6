"""`textenv label`: interactive answers are durable, undoable and resumable."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from textenv.preferences import Ranking, read_preferences, read_rankings, write_jsonl
from textenv.preferences.session import AnswerLog, build_questions
from textenv.preferences.terminal import run_interactive

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def samples(tmp_path):
    rows = [Ranking(f"prompt {i}", [f"a{i}", f"b{i}", f"c{i}"]) for i in range(4)]
    path = tmp_path / "samples.jsonl"
    write_jsonl(path, rows)
    return path


def _run(samples, out, answers, mode="pairs"):
    stdout = io.StringIO()
    n = run_interactive(samples, out, mode=mode, stdin=io.StringIO(answers), stdout=stdout)
    return n, stdout.getvalue()


def test_pairs_answers_are_valid_preferences(samples, tmp_path):
    out = tmp_path / "labels.jsonl"
    n, text = _run(samples, out, "1\n2\n1\n")
    assert n == 3 and "question 4 of 12" in text
    pairs = read_preferences(out)
    assert len(pairs) == 3 and [p.metadata["item"] for p in pairs] == [0, 1, 2]
    questions = build_questions(list(read_rankings(samples)), "pairs")
    # Answer "1" chose whatever was displayed first.
    q0 = questions[0]
    assert pairs[0].chosen == f"{'abc'[q0.shown[0]]}0"


def test_skip_undo_quit_and_bad_input(samples, tmp_path):
    out = tmp_path / "labels.jsonl"
    n, text = _run(samples, out, "s\n7\n1\n2\nu\nu\n2\nq\n1\n")
    # skip q0; "7" is rejected; q1 ← 1; q2 ← 2; undo q2; undo q1; q1 ← 2; quit.
    assert "give 1 or 2" in text and "undone: question 3" in text and "undone: question 2" in text
    assert n == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["item"] for r in rows] == [1]
    # Rerun: the skipped question comes back first.
    n, text = _run(samples, out, "1\n")
    assert n == 2 and "resuming: 1 answers" in text
    assert sorted(r["item"] for r in map(json.loads, out.read_text().splitlines())) == [0, 1]
    n, text = _run(samples, out, "u\nu\nu\n")
    assert n == 0 and "nothing to undo" in text and out.read_text() == ""


def test_rank_mode_writes_rankings(samples, tmp_path):
    out = tmp_path / "ranks.jsonl"
    n, text = _run(samples, out, "3 1 2\n1 1 2\n213\n", mode="rank")
    assert n == 2 and "each of 1..3 once" in text
    rows = read_rankings(out, require_ranking=True)
    questions = build_questions(list(read_rankings(samples)), "rank")
    assert rows[0].ranking == [questions[0].shown[d - 1] for d in (3, 1, 2)]
    assert len(read_preferences(out)) == 6  # 2 rankings × C(3, 2)


def test_torn_last_line_is_dropped(tmp_path):
    out = tmp_path / "labels.jsonl"
    out.write_text('{"item": 0, "prompt": "p", "chosen": "a", "rejected": "b"}\n{"item": 1, "pr')
    session = AnswerLog(out)
    assert len(session.rows) == 1 and out.read_text().count("\n") == 1
    out.write_text('{"item": 0, "prompt": "p", "chosen": "a", "rejected": "b"}\ngarbage\n{}\n')
    with pytest.raises(ValueError, match=":2: not a labelling row"):
        AnswerLog(out)


def _wait_for(proc, marker: bytes, timeout: float = 60.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {marker!r} in {seen[-500:]!r}")
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            raise EOFError(seen[-500:])
        seen += chunk
    return seen


@pytest.mark.parametrize("n", [0, 3])
def test_sigkill_after_n_answers_leaves_n_rows_and_resumes(samples, tmp_path, n):
    out = tmp_path / "labels.jsonl"
    cmd = [sys.executable, "-m", "textenv.cli", "label", str(samples), "--out", str(out),
           "--mode", "pairs"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
        env=env,
    )  # fmt: skip
    try:
        _wait_for(proc, b"question 1 of 12")
        for i in range(n):
            proc.stdin.write(b"12"[i % 2 : i % 2 + 1] + b"\n")
            proc.stdin.flush()
            # The next question appears only after the answer was fsync-ed.
            _wait_for(proc, f"question {i + 2} of 12".encode())
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    assert len(rows) == n and [r["item"] for r in rows] == list(range(n))
    if n:
        assert len(read_preferences(out)) == n
    # Rerun resumes at question n + 1.
    res = subprocess.run(
        cmd, input=b"q\n", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
        timeout=60,
    )  # fmt: skip
    shown = res.stdout.decode()
    assert f"question {n + 1} of 12 ({n} answered)" in shown, shown


def test_simulated_label_cli(samples, tmp_path):
    from textenv.cli import main

    out = tmp_path / "sim.jsonl"
    gold = "textenv.tasks.tiny:gold_score"
    assert main(["label", str(samples), "--out", str(out), "--gold", gold]) == 0
    pairs = read_preferences(out)
    assert len(pairs) == 12  # ties broken at random
    with pytest.raises(SystemExit, match="exists"):
        main(["label", str(samples), "--out", str(out), "--gold", gold])
