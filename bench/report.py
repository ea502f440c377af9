"""How a benchmark script ends: the best of its rounds as a markdown table of speeds and
ratios, printed and saved under bench/results/ with the raw figures."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def best_of_rounds(runs: dict[str, list[float]]) -> dict[str, float]:
    return {name: max(values) for name, values in runs.items()}


def speed_table(
    columns: list[str], best: dict[str, float], baseline: Callable[[str], float], versus: str
) -> str:
    """One row per name (a name may hold several columns, joined by " | "): its speed in MB/s
    and its ratio to ``baseline(name)``."""
    header = [*columns, "MB/s (best of rounds)", versus]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        f"| {name} | {speed / 1e6:.0f} | {speed / baseline(name):.2f} |"
        for name, speed in best.items()
    ]
    return "\n".join(lines)


def save(name: str, title: str, table: str, runs: dict[str, list[float]]) -> None:
    print(f"{title}\n\n{table}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"{name}-{stamp}.json").write_text(json.dumps(runs, indent=2))
    (RESULTS / f"{name}-{stamp}.md").write_text(table + "\n")
