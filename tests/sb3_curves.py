"""An SB3 callback shared by the SB3 learning tests (tests/test_sb3.py, tests/test_controls.py)."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback


class EpisodeInfoCurve(BaseCallback):
    """Mean of one info key (e.g. "rm_score", "gold_score") over the episodes that end in each
    rollout: one point per rollout in `means`."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self.means: list[float] = []
        self._cur: list[float] = []

    def _on_step(self) -> bool:
        for info, done in zip(self.locals["infos"], self.locals["dones"]):
            if done:
                self._cur.append(info[self.key])
        return True

    def _on_rollout_end(self) -> None:
        self.means.append(float(np.mean(self._cur)))
        self._cur = []
