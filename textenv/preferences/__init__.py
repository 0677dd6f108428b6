"""Preference records and their JSONL formats, simulated labellers, sampling of completions to
label, and the labelling front-ends.

Labelling by hand (``textenv label`` in the terminal) imports neither torch nor the models:
:func:`sample_completions` is imported on first use, and a simulated labeller loads its gold
scorer only when it is given one.
"""

from typing import TYPE_CHECKING, Any

from textenv.preferences import records
from textenv.preferences.records import *  # noqa: F403  (its __all__)
from textenv.preferences.simulated import LabelResult, SimulatedLabeller, noise_ceiling

if TYPE_CHECKING:
    from textenv.preferences.sampling import sample_completions

# The records module's list is the package's too, so a name added there is exported here.
__all__ = [
    *records.__all__,
    "SimulatedLabeller",
    "LabelResult",
    "noise_ceiling",
    "sample_completions",
]


def __getattr__(name: str) -> Any:
    if name == "sample_completions":  # torch and the models: only when sampling
        from textenv.preferences.sampling import sample_completions

        return sample_completions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
