"""Preference records and their JSONL formats, simulated labellers, sampling of completions to
label, and the labelling front-ends."""

from textenv.preferences.records import (
    PreferenceFormatError,
    PreferenceList,
    PreferencePair,
    Ranking,
    ranking_to_pairs,
    read_preferences,
    read_rankings,
    write_jsonl,
)
from textenv.preferences.sampling import sample_completions
from textenv.preferences.simulated import LabelResult, SimulatedLabeller, noise_ceiling

__all__ = [
    "PreferenceFormatError",
    "PreferencePair",
    "Ranking",
    "PreferenceList",
    "read_preferences",
    "read_rankings",
    "write_jsonl",
    "ranking_to_pairs",
    "SimulatedLabeller",
    "LabelResult",
    "noise_ceiling",
    "sample_completions",
]
