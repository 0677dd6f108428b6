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
from textenv.preferences.session import AnswerLog, LabelSession, build_questions
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


# --------------------------------------------------------------------------- questions by hash


def test_identical_completions_are_never_asked(tmp_path):
    rows = [
        Ranking("p", ["same", "other", "same"]),  # 2 distinct texts
        Ranking("q", ["x", "x"]),  # nothing to compare
        Ranking("p", ["other", "same", "same"]),  # the same question as row 0: asked once
    ]
    path = tmp_path / "samples.jsonl"
    write_jsonl(path, rows)
    pairs = build_questions(rows, "pairs")
    assert [(q.source, q.indices) for q in pairs] == [(0, (0, 1))]
    ranks = build_questions(rows, "rank")
    assert [(q.source, q.indices, q.mode) for q in ranks] == [(0, (0, 1), "rank")]
    for mode, answer in (("pairs", "1\n"), ("rank", "2 1\n")):
        out = tmp_path / f"{mode}.jsonl"
        n, text = _run(path, out, answer * 3, mode=mode)
        assert n == 1 and "question 1 of 1" in text and "all done" in text
        (pair,) = read_preferences(out)  # a chosen == rejected row would raise here
        assert {pair.chosen, pair.rejected} == {"same", "other"}


def test_answers_are_matched_by_hash_not_position(samples, tmp_path):
    out = tmp_path / "labels.jsonl"
    _run(samples, out, "1\n2\n1\nq\n")
    asked = [json.loads(line)["qid"] for line in out.read_text().splitlines()]
    # Reordered samples (and one new row): the same three questions count as answered.
    rows = list(read_rankings(samples))
    moved = tmp_path / "moved.jsonl"
    write_jsonl(moved, [Ranking("new prompt", ["n1", "n2"])] + rows[::-1])
    n, text = _run(moved, out, "q\n")
    assert n == 3 and "resuming: 3 answers" in text
    session = LabelSession(moved, out, mode="pairs")
    assert session.answered_by("terminal") == set(asked)
    assert session.progress("terminal")["left_for_me"] == 1 + 12 - 3
    # Rows written before questions had ids (no qid, no labeller) match by their content too.
    legacy = tmp_path / "legacy.jsonl"
    legacy.write_text(
        "".join(
            json.dumps({k: v for k, v in json.loads(line).items() if k not in ("qid", "labeller")})
            + "\n"
            for line in out.read_text().splitlines()
        )
    )
    assert len(LabelSession(samples, legacy, mode="pairs").log.entries) == 3
    n, text = _run(samples, legacy, "q\n")
    assert (
        "resuming: 3 answers" in text and f"question {_first_unanswered(samples, legacy)}" in text
    )


def _first_unanswered(samples, out) -> int:
    """The number shown for the first unanswered question of ``out``."""
    session = LabelSession(samples, out, mode="pairs")
    return session.next_for("terminal").item + 1


def test_changed_samples_or_mode_is_refused(samples, tmp_path, capsys):
    from textenv.cli import main
    from textenv.preferences.session import AnswerMismatchError

    out = tmp_path / "labels.jsonl"
    _run(samples, out, "1\n2\nq\n")
    before = out.read_bytes()
    with pytest.raises(AnswerMismatchError, match=r"labels.jsonl:1: .*mode 'rank'.*--mode changed"):
        LabelSession(samples, out, mode="rank")
    assert main(["label", str(samples), "--out", str(out), "--mode", "rank"]) == 2
    assert "the samples file or --mode changed" in capsys.readouterr().err
    changed = tmp_path / "changed.jsonl"
    rows = list(read_rankings(samples))
    rows[0].completions[0] = "edited"
    write_jsonl(changed, rows)
    with pytest.raises(AnswerMismatchError, match=r"\(2 of 2 answers do not match\)"):
        LabelSession(changed, out, mode="pairs")
    assert out.read_bytes() == before  # refusing wrote nothing
    # A row whose stored qid disagrees with its content was edited by hand: named by line.
    row = json.loads(out.read_text().splitlines()[1])
    row["chosen"] = "something else"
    out.write_text(out.read_text().splitlines()[0] + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=r"labels.jsonl:2: stored qid"):
        LabelSession(samples, out, mode="pairs")


def test_terminal_tie_goes_to_the_ties_file(samples, tmp_path):
    from textenv.preferences.session import ties_path

    out = tmp_path / "labels.jsonl"
    n, _ = _run(samples, out, "t\n1\nu\nu\nt\nq\n")
    # tie q0, answer q1, undo q1, undo the tie of q0, tie q0 again.
    assert n == 1 and out.read_text() == ""
    (tie,) = [json.loads(line) for line in ties_path(out).read_text().splitlines()]
    assert tie["tie"] is True and tie["item"] == 0 and tie["labeller"] == "terminal"
    n, text = _run(samples, out, "q\n")
    assert "question 2 of 12 (1 answered)" in text
    _, text = _run(samples, tmp_path / "r.jsonl", "t\nq\n", mode="rank")
    assert "a ranking has no ties" in text


# --------------------------------------------------------------------------- label stats


def _two_labellers(samples, out):
    """ann and bob answer the same 4 pair questions; they agree on 3."""
    session = LabelSession(samples, out, mode="pairs", overlap=2)
    qs = session.questions[:4]
    for q, a, b in zip(qs, [1, 1, 2, 2], [1, 2, 2, 2]):
        session.answer(q, [a], "ann")
        session.answer(q, [b], "bob")
    session.tie(session.questions[4], "ann")
    return session, qs


def test_stats_counts_agreement_and_gold(samples, tmp_path):
    from textenv.preferences.session import answer_stats, cohen_kappa, krippendorff_alpha_nominal

    out = tmp_path / "labels.jsonl"
    session, qs = _two_labellers(samples, out)
    stats = answer_stats(out)
    assert stats["answers"] == 9 and stats["pairs"] == 8 and stats["ties"] == 1
    assert stats["questions"] == 5 and stats["labellers"] == {"ann": 5, "bob": 4}
    ag = stats["agreement"]
    assert ag["shared_questions"] == 4 and ag["shared_judgements"] == 4
    assert ag["pairwise_agreement"] == pytest.approx(0.75)
    # By hand: ann's and bob's values on the 4 shared judgements, oriented by text order.
    ann, bob = [], []
    for q, a, b in zip(qs, [1, 1, 2, 2], [1, 2, 2, 2]):
        shown = q.shown_texts()
        for picks, d in ((ann, a), (bob, b)):
            better, worse = shown[d - 1], shown[2 - d]
            picks.append(1 if better < worse else -1)
    k = ag["cohen_kappa"]["ann vs bob"]
    assert k["judgements"] == 4 and k["kappa"] == pytest.approx(cohen_kappa(ann, bob))
    assert ag["krippendorff_alpha"] == pytest.approx(krippendorff_alpha_nominal(zip(ann, bob)))
    # Textbook values: kappa 0.5 and alpha 0.5333 for these two raters.
    assert cohen_kappa([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(0.5)
    assert krippendorff_alpha_nominal([[1, 1], [1, 0], [0, 0], [0, 0]]) == pytest.approx(
        1 - 14 / 30
    )
    assert krippendorff_alpha_nominal([[1, 1], [1, 1]]) is None  # one value only: undefined
    assert cohen_kappa([1, 1], [1, 1]) is None

    # Gold: the longer text is better; "a0" vs "b0" … have equal lengths: all gold ties.
    stats = answer_stats(out, gold=lambda p, c, m: [float(len(x)) for x in c])
    assert stats["gold"]["judgements"] == 0 and stats["gold"]["gold_ties_left_out"] == 8
    stats = answer_stats(out, gold=lambda p, c, m: [float(x[0] == "a") for x in c])
    g = stats["gold"]
    want = {}
    for q, name_answers in zip(qs, zip([1, 1, 2, 2], [1, 2, 2, 2])):
        for name, d in zip(("ann", "bob"), name_answers):
            best = q.shown_texts()[d - 1]
            if "a" in (t[0] for t in q.completions):  # the pair holds an "a…" text
                want.setdefault(name, []).append(best[0] == "a")
    assert g["per_labeller"] == {
        n: {"judgements": len(v), "agreement": pytest.approx(sum(v) / len(v))}
        for n, v in want.items()
    }


def test_stats_command(samples, tmp_path, capsys):
    from textenv.cli import main

    out = tmp_path / "labels.jsonl"
    _two_labellers(samples, out)
    assert main(["label", "stats", str(out), "--gold", "textenv.tasks.tiny:gold_score"]) == 0
    text = capsys.readouterr().out
    assert "answers: 9 (8 pairs, 0 rankings, 1 ties) to 5 questions" in text
    assert "per labeller: ann 5, bob 4" in text and "Cohen's kappa" in text and "gold:" in text
    assert main(["label", "stats", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["agreement"]["pairwise_agreement"] == 0.75
    # Statistics never write: a torn last line is left for the labelling session to drop.
    with open(out, "a") as f:
        f.write('{"prompt": "p", "cho')
    before = out.read_bytes()
    assert main(["label", "stats", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["answers"] == 9 and out.read_bytes() == before
    with pytest.raises(SystemExit, match="does not exist"):
        main(["label", "stats", str(tmp_path / "nope.jsonl")])
    with pytest.raises(SystemExit, match="needs --out"):
        main(["label", str(out)])


def test_labelling_by_hand_does_not_import_torch(samples, tmp_path):
    """The terminal front-end and `label stats` start without torch and the models (seconds
    for a person waiting at the prompt); a gold scorer or sampling would bring them in."""
    out = tmp_path / "labels.jsonl"
    code = (
        "import sys; from textenv.cli import main; "
        f"rc = main(['label', {str(samples)!r}, '--out', {str(out)!r}, '--mode', 'pairs']); "
        f"rc = rc or main(['label', 'stats', {str(out)!r}]); "
        "print('torch imported:', 'torch' in sys.modules); sys.exit(rc)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], input=b"1\nq\n", capture_output=True, cwd=ROOT, timeout=60
    )
    shown = res.stdout.decode()
    assert res.returncode == 0, shown + res.stderr.decode()
    assert "question 1 of 12" in shown and "torch imported: False" in shown
    assert len(read_preferences(out)) == 1
