"""The transfer modes: METHOD.md's table, once. The loop, config validation and the CLI read it.

| mode      | Q_θ starts from      | who flies (besides the learner) |
|-----------|----------------------|---------------------------------|
| scratch   | random weights       | nobody (epsilon-greedy)         |
| ez-greedy | random weights       | random-action flights           |
| ft        | the pre-trained ones | nobody (epsilon-greedy)         |
| bt        | random weights       | π_p's flights                   |
| bt+ft     | the pre-trained ones | π_p's flights                   |

A mode that reads a pre-trained run pins it: the checkpoint's folder and content hash are
recorded in the run's provenance, and a resume reloads exactly that checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

NO_FLIGHTS, RANDOM_FLIGHTS, PRETRAINED_FLIGHTS = "none", "random", "pretrained"


@dataclass(frozen=True)
class Mode:
    """What a transfer mode means: the weights it starts from and who flies its flights."""

    name: str
    copies_weights: bool  # FT: Q_θ starts from the pre-trained network's weights
    flights: str  # NO_FLIGHTS, RANDOM_FLIGHTS or PRETRAINED_FLIGHTS
    summary: str  # one line for --help

    @property
    def uses_pretrained(self) -> bool:
        """Whether the mode reads (and pins) a pre-trained run."""
        return self.copies_weights or self.flights == PRETRAINED_FLIGHTS

    @property
    def pretrained_flies(self) -> bool:
        """Whether π_p chooses some of the training steps (its returns then include π_p's)."""
        return self.flights == PRETRAINED_FLIGHTS


MODES: dict[str, Mode] = {m.name: m for m in (
    Mode("scratch", False, NO_FLIGHTS, "random init, epsilon-greedy"),
    Mode("ez-greedy", False, RANDOM_FLIGHTS, "exploratory steps start random-action flights"),
    Mode("ft", True, NO_FLIGHTS, "init from the pre-trained weights"),
    Mode("bt", False, PRETRAINED_FLIGHTS, "flights of the frozen pre-trained policy"),
    Mode("bt+ft", True, PRETRAINED_FLIGHTS, "both"),
)}
TRANSFER_MODES = tuple(MODES)
PRETRAINED_MODES = tuple(m.name for m in MODES.values() if m.uses_pretrained)
FT_MODES = tuple(m.name for m in MODES.values() if m.copies_weights)
FLIGHT_MODES = tuple(m.name for m in MODES.values() if m.pretrained_flies)


def flight_source(mode: str, flights: str = "auto") -> str:
    """Who flies a run's flights: its mode's (``auto``), or the one ``transfer.flights`` names."""
    return MODES[mode].flights if flights == "auto" else flights


def mode_help() -> str:
    """The --mode help text, from the table."""
    return " | ".join(f"{m.name}: {m.summary}" for m in MODES.values())
