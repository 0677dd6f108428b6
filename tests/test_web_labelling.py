"""`textenv label --web`: the labelling page's API (Starlette TestClient), its refusals and
guards, durability across a killed server, and a full session in a real headless Chromium.

Servers bind 127.0.0.1 only, on a free port; every loop is bounded; every server is stopped at
the end of its test. ``TEXTENV_UPDATE_SCREENSHOT=1`` makes the browser test write its screenshot
to docs/labelling_page.png (the one in the README).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the web extra is not installed (pip install textenv[web])")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx")

from starlette.testclient import TestClient  # noqa: E402

from textenv.preferences import Ranking, read_preferences, read_rankings, write_jsonl  # noqa: E402
from textenv.preferences.session import LabelSession, ties_path  # noqa: E402
from textenv.preferences.web import STATIC, BackgroundServer, create_app, serve  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEA = [
    "The sea was calm and bright under the morning sun.",
    "sea sea the the of and and",
    "Waves broke on the grey rocks while gulls circled overhead.",
]
XSS = ["<script>window.__pwned = 1</script>", '<img src=x onerror="window.__pwned = 2">']


@pytest.fixture
def samples(tmp_path):
    rows = [
        Ranking("Say <b>hi</b>", list(XSS)),
        Ranking("Write one sentence about the sea.", list(SEA)),
        Ranking("Last one", ["yes", "no"]),
        Ranking("Same twice", ["same", "same"]),  # identical completions: never asked
    ]
    path = tmp_path / "samples.jsonl"
    write_jsonl(path, rows)
    return path


def _client(session, **kw):
    return TestClient(create_app(session, **kw), base_url="http://127.0.0.1")


def _answer(client, q, order, expect=200):
    r = client.post("/api/answer", json={"qid": q["qid"], "shown": q["shown"], "order": order})
    assert r.status_code == expect, r.text
    return r.json()


def test_api_session_writes_the_terminal_format(samples, tmp_path):
    out = tmp_path / "answers.jsonl"
    session = LabelSession(samples, out)
    with _client(session) as c:
        page = c.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "script-src 'self'" in page.headers["content-security-policy"]
        s = c.get("/api/state").json()
        assert s["progress"] == {
            "questions": 3, "complete": 0, "answers": 0, "mine": 0, "left_for_me": 3,
        }  # fmt: skip
        labeller = s["labeller"]
        q = s["question"]
        assert q["mode"] == "pairs" and sorted(q["completions"]) == sorted(XSS)
        s = _answer(c, q, [2])
        assert out.read_text().count("\n") == 1  # on disk when the response came
        q = s["question"]
        assert q["mode"] == "rank" and q["prompt"] == "Write one sentence about the sea."
        s = _answer(c, q, [3, 1, 2])
        q = s["question"]
        r = c.post("/api/tie", json={"qid": q["qid"], "shown": q["shown"]})
        assert r.status_code == 200 and r.json()["done"] and r.json()["question"] is None
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [sorted(r) for r in rows][0] == sorted(
        ["prompt", "chosen", "rejected", "source_indices", "qid", "item", "source", "labeller",
         "answered_at"]
    )  # fmt: skip
    assert {r["labeller"] for r in rows} == {labeller}
    pairs = read_preferences(out)  # what `textenv rm train` reads
    assert len(pairs) == 1 + 3 and pairs[0].metadata["labeller"] == labeller
    ranked = read_rankings([rows[1]], require_ranking=True)[0]
    assert ranked.completions == SEA
    tie = json.loads(ties_path(out).read_text())
    assert tie["tie"] is True and tie["prompt"] == "Last one"


def test_refusals_write_nothing(samples, tmp_path):
    out = tmp_path / "answers.jsonl"
    with _client(LabelSession(samples, out)) as c:
        q = c.get("/api/state").json()["question"]
        _answer(c, q, [1])
        before = out.read_bytes()
        cases = [
            ({"qid": "0" * 16, "shown": q["shown"], "order": [1]}, 409, "no question"),
            ({"qid": q["qid"], "shown": q["shown"], "order": [1]}, 409, "already answered"),
            ({"qid": 5, "shown": q["shown"], "order": [1]}, 400, "qid"),
        ]
        q2 = c.get("/api/state").json()["question"]
        cases += [
            (
                {"qid": q2["qid"], "shown": q2["shown"][::-1], "order": [1, 2, 3]},
                409,
                "out of date",
            ),
            ({"qid": q2["qid"], "shown": q2["shown"], "order": [1, 1, 2]}, 400, "each of 1..3"),
            ({"qid": q2["qid"], "shown": q2["shown"], "order": [True, 2, 3]}, 400, "order"),
            ({"qid": q2["qid"], "shown": q2["shown"]}, 400, "order"),
        ]
        for body, status, text in cases:
            r = c.post("/api/answer", json=body)
            assert r.status_code == status and text in r.json()["error"], (body, r.text)
            assert r.json()["state"]["question"]["qid"] == q2["qid"]  # the page can recover
        r = c.post("/api/tie", json={"qid": q2["qid"], "shown": q2["shown"]})
        assert r.status_code == 400 and "no ties" in r.json()["error"]
        r = c.post("/api/answer", content=b"qid=x", headers={"content-type": "text/plain"})
        assert r.status_code == 415  # a cross-site form post cannot send JSON without CORS
        r = c.post("/api/answer", content=b"{", headers={"content-type": "application/json"})
        assert r.status_code == 400
        r = c.post("/api/answer", json=[1])
        assert r.status_code == 400
        assert c.get("/api/nothing").status_code == 404
        assert out.read_bytes() == before and not ties_path(out).exists()
        # Undo removes only this labeller's answer; a second undo has nothing left.
        assert c.post("/api/undo", json={}).json()["question"]["qid"] == q["qid"]
        r = c.post("/api/undo", json={})
        assert r.status_code == 409 and "nothing to undo" in r.json()["error"]
        assert out.read_text() == ""


def test_skip_undo_and_resume_at_first_unanswered(samples, tmp_path):
    out = tmp_path / "answers.jsonl"
    with _client(LabelSession(samples, out)) as c:
        c.get("/api/state?labeller=ann")
        q1 = c.get("/api/state").json()["question"]
        r = c.post("/api/skip", json={"qid": q1["qid"], "shown": q1["shown"]}).json()
        q2 = r["question"]
        assert q2["qid"] != q1["qid"] and r["skipped"] == 1
        q3 = _answer(c, q2, [1, 2, 3])["question"]
        s = _answer(c, q3, [1])
        assert s["done"] and s["skipped"] == 1
        s = c.post("/api/unskip", json={}).json()
        assert s["question"]["qid"] == q1["qid"]
        s = c.post("/api/undo", json={}).json()  # undone: asked again next
        assert s["question"]["qid"] == q3["qid"] and s["progress"]["mine"] == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["qid"] for r in rows] == [q2["qid"]] and rows[0]["labeller"] == "ann"
    # A new server on the same file: the first unanswered question, whoever asks.
    with _client(LabelSession(samples, out)) as c:
        s = c.get("/api/state").json()
        assert s["question"]["qid"] == q1["qid"] and s["progress"]["answers"] == 1


def test_several_labellers_overlap_and_reservations(samples, tmp_path):
    out = tmp_path / "answers.jsonl"
    app = create_app(LabelSession(samples, out, overlap=1))
    with (
        TestClient(app, base_url="http://127.0.0.1") as a,
        TestClient(app, base_url="http://127.0.0.1") as b,
    ):
        qa = a.get("/api/state?labeller=ann").json()["question"]
        qb = b.get("/api/state?labeller=bob").json()["question"]
        assert qa["qid"] != qb["qid"]  # a question shown to ann is held for her
        _answer(b, qb, [1, 2][: len(qb["shown"])] if qb["mode"] == "pairs" else [1, 2, 3])
        # bob may not answer ann's question once she has (overlap 1)...
        _answer(a, qa, [1] if qa["mode"] == "pairs" else [1, 2, 3])
        r = b.post("/api/answer", json={"qid": qa["qid"], "shown": qa["shown"], "order": [1]})
        assert r.status_code == 409 and "answered meanwhile" in r.json()["error"]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["labeller"] for r in rows) == ["ann", "bob"]
    # An expired hold (reserve_s=0) no longer keeps the question from others.
    app = create_app(LabelSession(samples, tmp_path / "answers3.jsonl"), reserve_s=0.0)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        qa = c.get("/api/state?labeller=ann").json()["question"]
        assert c.get("/api/state?labeller=bob").json()["question"]["qid"] == qa["qid"]

    out2 = tmp_path / "answers2.jsonl"
    app = create_app(LabelSession(samples, out2, overlap=2))
    with (
        TestClient(app, base_url="http://127.0.0.1") as a,
        TestClient(app, base_url="http://127.0.0.1") as b,
    ):
        for client, name in ((a, "ann"), (b, "bob")):
            s = client.get(f"/api/state?labeller={name}").json()
            for _ in range(3):  # 3 questions each
                q = s["question"]
                s = _answer(client, q, [2, 1] if q["mode"] == "pairs" else [3, 2, 1])
            assert s["done"] and s["progress"]["mine"] == 3
        assert s["progress"]["complete"] == 3 and s["progress"]["answers"] == 6


def test_token_and_host_guards(samples, tmp_path):
    session = LabelSession(samples, tmp_path / "answers.jsonl")
    token = "tok-abc123"
    with TestClient(create_app(session, token=token, local_only=False)) as c:
        assert c.get("/").status_code == 403
        assert c.get("/api/state").status_code == 403
        assert c.get("/t/wrong/api/state").status_code == 403
        r = c.get(f"/t/{token}", follow_redirects=False)
        assert r.status_code == 307 and r.headers["location"].endswith(f"/t/{token}/")
        assert c.get(f"/t/{token}/").status_code == 200
        assert c.get(f"/t/{token}/app.js").status_code == 200
        q = c.get(f"/t/{token}/api/state").json()["question"]
        body = {"qid": q["qid"], "shown": q["shown"], "order": [1]}
        assert c.post("/api/answer", json=body).status_code == 403
        assert c.post(f"/t/{token}/api/answer", json=body).status_code == 200
    # Local mode answers loopback host names only (no DNS rebinding).
    with _client(session) as c:
        assert c.get("/", headers={"host": "evil.example:8765"}).status_code == 400
        assert c.get("/", headers={"host": "localhost:8765"}).status_code == 200
        assert c.get("/", headers={"host": "[::1]:8765"}).status_code == 200
    with pytest.raises(SystemExit, match="--allow-remote"):
        serve(str(tmp_path / "x.jsonl"), tmp_path / "a.jsonl", host="0.0.0.0", open_browser=False)


def test_completions_are_served_as_text_never_html(samples, tmp_path):
    with _client(LabelSession(samples, tmp_path / "answers.jsonl")) as c:
        r = c.get("/api/state")
        assert r.headers["content-type"].startswith("application/json")
        assert sorted(r.json()["question"]["completions"]) == sorted(XSS)  # verbatim text
        assert r.headers["x-content-type-options"] == "nosniff"
    script = (STATIC / "app.js").read_text()
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in code, sink
    assert "textContent" in code
    html = (STATIC / "index.html").read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing from the network
    assert "<script>" not in html and "style=" not in html  # CSP: no inline code or style


def test_changed_samples_or_mode_is_refused_by_the_web_command(samples, tmp_path):
    from textenv.cli import main

    out = tmp_path / "answers.jsonl"
    with _client(LabelSession(samples, out)) as c:
        _answer(c, c.get("/api/state").json()["question"], [1])
    rc = main(["label", str(samples), "--out", str(out), "--web", "--mode", "rank",
               "--no-browser", "--port", "0"])  # fmt: skip
    assert rc == 2  # refused before serving anything


# --------------------------------------------------------------------------- a killed server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """``textenv label --web`` in a subprocess (killable), on 127.0.0.1:port."""

    def __init__(self, samples: Path, out: Path, port: int) -> None:
        cmd = [sys.executable, "-m", "textenv.cli", "label", str(samples), "--out", str(out),
               "--web", "--port", str(port), "--no-browser"]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, env=env
        )
        seen = b""
        deadline = time.monotonic() + 90
        while b"labelling page: " not in seen or not seen.endswith(b"\n"):
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(seen.decode(errors="replace"))
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"server exited: {seen.decode(errors='replace')}")
            seen += chunk
        self.url = re.search(rb"labelling page: (\S+)", seen).group(1).decode()
        _wait_listening(port)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_killed_server_loses_nothing_and_resumes(samples, tmp_path):
    import httpx

    out = tmp_path / "answers.jsonl"
    port = _free_port()
    server = _Server(samples, out, port)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            s = c.get("api/state", params={"labeller": "ann"}).json()
            q1 = s["question"]
            s = c.post("api/answer", json={"qid": q1["qid"], "shown": q1["shown"], "order": [2]})
            q2 = s.json()["question"]  # the response that shows the next question
            server.kill()  # SIGKILL right after it: the answer is already on disk
        (row,) = [json.loads(line) for line in out.read_text().splitlines()]
        assert row["qid"] == q1["qid"] and row["labeller"] == "ann"
    finally:
        server.kill()
    # A restart (here in-process; the browser test restarts the command) resumes after it.
    with _client(LabelSession(samples, out)) as c:
        s = c.get("/api/state?labeller=ann").json()
        assert s["question"]["qid"] == q2["qid"] and s["progress"]["mine"] == 1


def test_background_server_serves_and_stops(samples, tmp_path):
    import httpx

    app = create_app(LabelSession(samples, tmp_path / "answers.jsonl"))
    with BackgroundServer(app) as server:
        assert server.url.startswith("http://127.0.0.1:")
        r = httpx.get(server.url + "api/state", timeout=10)
        assert r.status_code == 200 and r.json()["progress"]["questions"] == 3
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url, timeout=2)


# --------------------------------------------------------------------------- a real browser


def _chromium() -> tuple[str, str] | None:
    for browser in ("chromium", "chromium-browser"):
        path = shutil.which(browser)
        if path and shutil.which("chromedriver"):
            return path, shutil.which("chromedriver")
    return None


@pytest.mark.skipif(
    _chromium() is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
    "chromium-driver; .ci/run installs them)",
)
def test_full_session_in_headless_chromium(samples, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (dev extra)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,800", "--no-first-run", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    out = tmp_path / "answers.jsonl"
    port = _free_port()
    # In-process servers keep this test quick; the SIGKILL of the command itself is
    # test_killed_server_loses_nothing_and_resumes.
    server = BackgroundServer(create_app(LabelSession(samples, out)), port=port)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver_path))
    wait = WebDriverWait(driver, 20)

    def text(id_: str) -> str:
        return driver.find_element(By.ID, id_).text

    def progress_says(words: str) -> None:
        wait.until(lambda d: words in text("progress-text"))

    def press(key: str) -> None:
        driver.find_element(By.TAG_NAME, "body").send_keys(key)

    try:
        driver.get(server.url + "?labeller=ann")
        wait.until(lambda d: text("q-title").startswith("Question 1 of 3"))
        # Model output containing markup is shown literally and never runs.
        cards = driver.find_elements(By.CSS_SELECTOR, "#choices .card .text")
        assert sorted(c.text for c in cards) == sorted(XSS)
        assert driver.find_elements(By.CSS_SELECTOR, "#choices img, #choices script") == []
        assert driver.execute_script("return window.__pwned === undefined")
        first_shown = cards[0].text

        press("1")  # keyboard: the first shown is better
        progress_says("you: 1 answered")
        press("u")  # undo: the same question again
        progress_says("you: 0 answered")
        wait.until(lambda d: text("q-title").startswith("Question 1 of 3"))
        assert out.read_text() == ""
        driver.find_elements(By.CSS_SELECTOR, "#choices .card")[1].click()  # mouse: the second
        progress_says("you: 1 answered")
        wait.until(lambda d: text("q-title").startswith("Question 2 of 3"))

        # Ranking: a mouse move (▼ on the top card), then typed numbers best first.
        shown = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#choices .card .text")]
        driver.find_elements(By.CSS_SELECTOR, "#choices .card .down")[0].click()
        moved = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#choices .card .text")]
        assert moved == [shown[1], shown[0], shown[2]]
        # A drag (the page's HTML5 drag-and-drop handlers): the bottom card onto the top one.
        driver.execute_script(
            """const cards = document.querySelectorAll('#choices .card');
            const dt = new DataTransfer();
            const fire = (el, type) => el.dispatchEvent(
                new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: dt}));
            fire(cards[2], 'dragstart'); fire(cards[0], 'dragover'); fire(cards[0], 'drop');"""
        )
        dragged = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#choices .card .text")]
        assert dragged == [shown[2], shown[1], shown[0]]
        press("3")
        press("1")  # the last is implied
        assert "typed, best first: 3 1 2" in text("typed")
        (tmp_path / "page.png").write_bytes(driver.get_screenshot_as_png())

        # Reload mid-way: the typed ranking is not sent; the same question comes back.
        driver.refresh()
        wait.until(lambda d: text("q-title").startswith("Question 2 of 3"))
        press("3")
        press("1")
        press("\ue007")  # Enter
        progress_says("you: 2 answered")

        # Stop the server: both answers are on disk; a restart resumes at question 3.
        server.stop()
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["item"] for r in rows] == [0, 1] and {r["labeller"] for r in rows} == {"ann"}
        assert rows[0]["chosen"] != first_shown and rows[0]["chosen"] in XSS
        assert [rows[1]["completions"][i] for i in rows[1]["ranking"]] == [
            shown[2], shown[0], shown[1]
        ]  # fmt: skip
        server = BackgroundServer(create_app(LabelSession(samples, out)), port=port)
        driver.refresh()
        wait.until(lambda d: text("q-title").startswith("Question 3 of 3"))
        assert "you: 2 answered" in text("progress-text")  # the cookie kept the labeller
        press("t")  # a tie
        wait.until(lambda d: d.find_element(By.ID, "done").is_displayed())
        assert "You answered 3 questions" in text("done-text")
        assert "3 of 3 questions complete" in text("progress-text")
    finally:
        driver.quit()
        server.stop()
    assert len(read_preferences(out)) == 1 + 3  # a pair and a ranking of 3; the tie is aside
    assert json.loads(ties_path(out).read_text())["labeller"] == "ann"
    png = (tmp_path / "page.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    if os.environ.get("TEXTENV_UPDATE_SCREENSHOT") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "labelling_page.png").write_bytes(png)
