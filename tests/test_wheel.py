"""An installed, non-editable wheel carries the built-in models and loads them offline."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_and_loads_builtin_models(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            "-q",
        ],
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("textenv-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for model in ("prose", "sort"):
        for file in ("config.json", "model.safetensors", "tokenizer.json"):
            assert f"textenv/data/models/{model}/{file}" in names
    assert "textenv/data/tasks/sentiment/eval.jsonl" in names

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
            "-q",
        ],
        check=True,
    )
    code = (
        "import textenv, textenv.lm.models as m, gymnasium as gym;"
        f"assert m.__file__.startswith({str(target)!r}), m.__file__;"
        "lm = m.load_causal_lm('builtin:prose');"
        "env = gym.make('textenv/Sentiment-v0'); env.reset(seed=0); print('ok')"
    )
    env = dict(os.environ, PYTHONPATH=str(target), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
