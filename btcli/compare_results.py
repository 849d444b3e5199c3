"""What `btcli compare` computes and reports: its metrics, groups' aggregates and the comparison itself."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from btcli.errors import BtcliError
from btcli.run_logs import RunData
from btcli.run_summary import EVAL_LAST

METRICS = ("eval-last", "eval-auc", "eval", "final", "auc")
DEFAULT_METRIC = "eval-last"
EVAL_METRICS = ("eval-last", "eval-auc", "eval")  # the learner's own greedy policy: no flights
# the group of π_p zero-shot scores that compare adds beside the transfer runs that used π_p
REFERENCE = "π_p zero-shot"
AGGREGATES = ("median", "iqm", "mean", "optimality_gap")
AGGREGATE_TITLES = {"median": "Median", "iqm": "IQM", "mean": "Mean", "optimality_gap": "Optimality gap"}
FINAL_WINDOW = 100
PROFILE_POINTS = 101
DEFAULT_REPS = 2000

# summarize_run's key for each metric, and what it is called in messages.
_METRIC_KEYS = {"final": "return_last_mean", "auc": "auc", "eval": "eval_return_mean",
                "eval-last": "eval_last_mean", "eval-auc": "eval_auc"}
_METRIC_WORDS = {
    "final": f"mean return of the last {FINAL_WINDOW} training episodes",
    "auc": "area under the binned learning curve (mean return over 20 step bins of the budget)",
    "eval": "the learner's greedy policy: mean return of the last evaluation",
    "eval-last": "the learner's greedy policy: mean of its last {k} evaluations' mean returns",
    "eval-auc": "the learner's greedy policy: area under its evaluation curve, normalised to a mean return "
                "(each evaluation's mean weighted by the steps since the one before)",
}
_FLIGHTS_WORDS = "; in bt and bt+ft runs these episodes include π_p's flights (what the agent experienced, not what the learner learned)"
_REFERENCE_WORDS = ("π_p zero-shot: the frozen pre-trained policy evaluated by the transfer runs beside their "
                    "learner (same episodes and epsilon), every episode of one π_p on one task pooled; one score "
                    "per pre-trained checkpoint and task, whatever the metric")
_SCALE_WORDS = {
    "human": "human-normalised ((score - random) / (human - random), published scores)",
    "minmax": "min-max normalised over all runs of the task (0 = worst run, 1 = best run)",
    "raw": "raw score (a single task: no normalisation)",
}


class CompareError(BtcliError):
    """Input that `btcli compare` cannot aggregate without a guess; the message is one line."""


@dataclass
class RunScore:
    """One run's place in the comparison and its score."""

    path: Path
    group: str
    task: str
    seed: Any
    status: str
    budget: int | None
    score: float
    normalised: float = math.nan


@dataclass
class Interval:
    """A point estimate with its confidence interval."""

    point: float
    lo: float
    hi: float

    def as_dict(self) -> dict[str, float]:
        return {"point": self.point, "lo": self.lo, "hi": self.hi}


@dataclass
class GroupResult:
    """Aggregates of one group: ``aggregates[name]`` for each name in :data:`AGGREGATES`."""

    name: str
    runs: int
    runs_per_task: int
    aggregates: dict[str, Interval]


@dataclass
class Improvement:
    """P(x > y): probability that a run of group ``x`` beats one of group ``y`` on a random task."""

    x: str
    y: str
    interval: Interval


@dataclass
class Profile:
    """Fraction of (run, task) scores above each tau, with a pointwise confidence band."""

    point: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


@dataclass
class Comparison:
    """Everything `btcli compare` reports; :func:`to_json` gives its JSON form."""

    by: str
    metric: str
    groups: list[str]
    tasks: list[str]
    scales: dict[str, str]
    gap_threshold: float
    scores: list[RunScore]
    results: list[GroupResult]
    improvements: list[Improvement]
    taus: np.ndarray
    profiles: dict[str, Profile]
    reps: int
    level: float
    runs: dict[Path, RunData] = field(repr=False)
    notes: list[str] = field(default_factory=list)
    eval_last: int = EVAL_LAST
    includes_flights: bool = False  # a training-episode metric over runs with π_p's flights

    @property
    def metric_definition(self) -> str:
        words = _METRIC_WORDS[self.metric].format(k=self.eval_last)
        return words + (_FLIGHTS_WORDS if self.includes_flights else "")

    @property
    def metric_label(self) -> str:
        """The metric's name as the tables print it; says so when it counts π_p's steps."""
        name = f"{self.metric} (k={self.eval_last})" if self.metric == "eval-last" else self.metric
        return name + (" [training episodes, incl. π_p's flights]" if self.includes_flights else "")

    @property
    def scale_label(self) -> str:
        """Axis label of the aggregated scores."""
        kinds = set(self.scales.values())
        if kinds == {"raw"}:
            return "raw score"
        if kinds == {"human"}:
            return "human-normalised score"
        return "normalised score"

