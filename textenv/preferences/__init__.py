"""Preference records and their JSONL formats, simulated labellers, sampling of completions to
label, and the labelling front-ends."""

from textenv.preferences import records
from textenv.preferences.records import *  # noqa: F403  (its __all__)
from textenv.preferences.sampling import sample_completions
from textenv.preferences.simulated import LabelResult, SimulatedLabeller, noise_ceiling

# The records module's list is the package's too, so a name added there is exported here.
__all__ = [
    *records.__all__,
    "SimulatedLabeller",
    "LabelResult",
    "noise_ceiling",
    "sample_completions",
]
