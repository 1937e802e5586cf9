"""Connectivity across the NAT lab: every pair of NAT kinds, N connects each (issue #6).

The matrix is the test suite's (``tests/natlab/matrix.py``: seven NAT kinds -- full cone,
restricted cone, port-restricted cone, symmetric, shifted, double NAT, UDP blocked -- as
every ordered dialler -> accepter pair, plus two hosts behind one NAT with and without
hairpinning; the same runner, the same expectation table). Each round runs every pair
once, on NATs that forgot every mapping, in a rotated order; ``--runs`` rounds. A pair
that starts on the relay is given the rest of its direct punch (``--upgrade-wait``) and
counts as direct when the connection upgrades.

Written to ``--out``: ``connectivity.md`` (per pair: runs, success %, direct %, median and
p95 time for the dialler's ``connect()``, the path theory allows and why; a dialler x
accepter matrix of direct %), ``connectivity.png`` (the heat map: rows the dialler's kind,
columns the accepter's, colour the share of direct paths, text success/direct/median;
needs matplotlib, else skipped with a message) and ``connectivity.json`` (every run).

Goals (issue #6): every pair connects (100 %); the share of direct paths above libp2p
DCUtR's measured ~70 % (the 2025 measurement campaign's hole-punching success rate) on
the same mix of NATs -- and direct for every pair theory allows; median time to a direct
path under 1 s in the lab.

Needs root and the lab's tools (see ``tests/natlab``), redis-server. Run::

    sudo .venv/bin/python benchmarks/connectivity.py              # 20 runs per pair, ~47 min
    sudo .venv/bin/python benchmarks/connectivity.py --quick      # 2 runs per pair, ~5 min
    sudo .venv/bin/python benchmarks/connectivity.py --runs 50 --pairs 'symmetric->*,*->symmetric'
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import importlib.util
import json
import math
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # tests.natlab, as pytest sees it

from harness import rotation  # noqa: E402

from client_sdk.connect import PunchConfig  # noqa: E402
from tests.natlab.matrix import (  # noqa: E402
    CASES,
    KINDS,
    SAME_NAT,
    Case,
    PairResult,
    Stack,
    Timing,
    run_case,
)
from tests.natlab.netns import missing_requirements  # noqa: E402

DCUTR_DIRECT_SHARE = 0.70  # libp2p DCUtR's measured hole-punching success rate
DIRECT_MEDIAN_GOAL = 1.0  # seconds
DEFAULT_OUT = Path(tempfile.gettempdir()) / "natkit-connectivity"
NO_MATPLOTLIB = "(no heat map: matplotlib is not installed -- `pip install matplotlib`)"


# ---- statistics ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PairStats:
    """What ``runs`` connects of one case gave."""

    case: Case
    runs: int
    connected: int  # both sides connected and a datagram went each way
    direct: int  # ... and the path was direct, from the start or by an upgrade
    upgraded: int  # ... by an upgrade from the relay
    seconds: tuple[float, ...]  # the dialler's connect() of each connected run
    direct_seconds: tuple[float, ...]  # from connect() to a direct path, each direct run

    @classmethod
    def of(cls, case: Case, results: Sequence[PairResult]) -> PairStats:
        connected = [r for r in results if r.connected and r.seconds is not None]
        direct = [r for r in connected if r.direct_seconds is not None]
        return cls(
            case,
            len(results),
            len(connected),
            len(direct),
            sum(r.upgraded for r in direct),
            tuple(r.seconds for r in connected if r.seconds is not None),
            tuple(r.direct_seconds for r in direct if r.direct_seconds is not None),
        )

    @property
    def success(self) -> float:
        return self.connected / self.runs if self.runs else math.nan

    @property
    def direct_share(self) -> float:
        return self.direct / self.runs if self.runs else math.nan

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else math.nan

    @property
    def p95(self) -> float:
        return percentile(self.seconds, 95)

    @property
    def direct_median(self) -> float:
        return statistics.median(self.direct_seconds) if self.direct_seconds else math.nan


def percentile(values: Sequence[float], pct: int) -> float:
    """The ``pct``-th percentile (inclusive method); NaN for no values."""
    if not values:
        return math.nan
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def share(part: int, whole: int) -> float:
    return part / whole if whole else math.nan


def pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0%}"


def secs(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


# ---- the goals ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    runs: int
    connected: int
    pairs: int
    pairs_always_connected: int
    direct: int
    allowed_runs: int  # runs of the pairs theory allows a direct path
    allowed_direct: int
    allowed_pairs: int
    allowed_pairs_always_direct: int
    direct_median: float

    @classmethod
    def of(cls, stats: Sequence[PairStats]) -> Summary:
        allowed = [s for s in stats if s.case.expected == "direct"]
        direct_seconds = [t for s in stats for t in s.direct_seconds]
        return cls(
            runs=sum(s.runs for s in stats),
            connected=sum(s.connected for s in stats),
            pairs=len(stats),
            pairs_always_connected=sum(s.connected == s.runs > 0 for s in stats),
            direct=sum(s.direct for s in stats),
            allowed_runs=sum(s.runs for s in allowed),
            allowed_direct=sum(s.direct for s in allowed),
            allowed_pairs=len(allowed),
            allowed_pairs_always_direct=sum(s.direct == s.runs > 0 for s in allowed),
            direct_median=statistics.median(direct_seconds) if direct_seconds else math.nan,
        )

    def lines(self) -> list[str]:
        direct_share = share(self.direct, self.runs)
        allowed_share = share(self.allowed_direct, self.allowed_runs)
        return [
            f"pairs connected in every run: {self.pairs_always_connected}/{self.pairs}; "
            f"runs connected: {pct(share(self.connected, self.runs))} "
            f"({self.connected}/{self.runs}) -- goal 100%: " + met(self.connected == self.runs),
            f"direct paths over all runs: {pct(direct_share)} -- goal above libp2p DCUtR's "
            f"~{DCUTR_DIRECT_SHARE:.0%}: " + met(direct_share > DCUTR_DIRECT_SHARE),
            f"direct where theory allows it: {pct(allowed_share)} of runs, "
            f"{self.allowed_pairs_always_direct}/{self.allowed_pairs} pairs direct in every "
            "run -- goal every such pair: "
            + met(self.allowed_pairs_always_direct == self.allowed_pairs),
            f"median time to a direct path: {secs(self.direct_median)} s -- goal under "
            f"{DIRECT_MEDIAN_GOAL:g} s: " + met(self.direct_median < DIRECT_MEDIAN_GOAL),
        ]


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


# ---- running ------------------------------------------------------------------------------


def select(patterns: str | None) -> list[Case]:
    """The cases whose id matches one of the comma-separated shell patterns (all: None)."""
    if not patterns:
        return list(CASES)
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    return [case for case in CASES if any(fnmatch.fnmatchcase(case.id, p) for p in wanted)]


def run(cases: Sequence[Case], runs: int, timing: Timing) -> dict[str, list[PairResult]]:
    """``runs`` rounds of every case (in a rotated order); stops early, keeping what it
    has, on Ctrl-C or SIGTERM (see ``interruptible``)."""
    by_id = {case.id: case for case in cases}
    results: dict[str, list[PairResult]] = {case.id: [] for case in cases}
    started = time.monotonic()
    with Stack() as stack:
        print(f"[lab] up in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
        try:
            for number in range(runs):
                round_started = time.monotonic()
                outcomes = []
                for case_id in rotation(list(by_id), number):
                    result = run_case(stack, by_id[case_id], timing)
                    results[case_id].append(result)
                    outcomes.append(result)
                    if not result.connected:
                        why = result.error.splitlines()[0] if result.error else "?"
                        print(f"  {case_id}: FAILED - {why}", file=sys.stderr, flush=True)
                connected = sum(r.connected for r in outcomes)
                direct = sum(r.connected and r.best_path == "direct" for r in outcomes)
                print(
                    f"[round {number + 1}/{runs}] {len(outcomes)} pairs: {connected} connected, "
                    f"{direct} direct ({time.monotonic() - round_started:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
        except KeyboardInterrupt:
            print("[interrupted] reporting the runs so far", file=sys.stderr)
    return results


# ---- the report ---------------------------------------------------------------------------


def table(stats: Sequence[PairStats]) -> list[str]:
    """The Markdown table, one row per pair."""
    rows = [
        "| pair (dialler->accepter) | runs | success | direct | connect median s | p95 s "
        "| to direct median s | expected |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in stats:
        direct = pct(s.direct_share) + (f" ({s.upgraded} upgraded)" if s.upgraded else "")
        rows.append(
            f"| {s.case.id} | {s.runs} | {pct(s.success)} | {direct} | {secs(s.median)} | "
            f"{secs(s.p95)} | {secs(s.direct_median)} | {s.case.expected} ({s.case.rule.name}) |"
        )
    return rows


def grid(stats: Sequence[PairStats]) -> list[str]:
    """Direct % per dialler (rows) x accepter (columns), Markdown."""
    cell = {(s.case.dialler.label, s.case.accepter.label): s for s in stats if not s.case.same_nat}
    labels = [k.label for k in KINDS]
    rows = ["| dialler \\ accepter | " + " | ".join(labels) + " |"]
    rows.append("|---|" + "---:|" * len(labels))
    for dialler in labels:
        shown = [pct(cell[dialler, a].direct_share) if (dialler, a) in cell else "" for a in labels]
        rows.append(f"| {dialler} | " + " | ".join(shown) + " |")
    return rows


def markdown(stats: Sequence[PairStats], summary: Summary, settings: str, png: str) -> str:
    return "\n".join(
        [
            "# natkit connectivity across the NAT lab",
            "",
            settings,
            "",
            "Success: both sides connected and a datagram went each way. Direct: the path was "
            "direct -- when `connect()` returned, or by an upgrade from the relay while the "
            "punch went on (counted in brackets). Connect: the dialler's `connect()`; to "
            "direct: from its start to the direct path (connected runs). Expected: the path "
            "theory allows (tests/natlab/matrix.py `RULES`).",
            "",
            *table(stats),
            "",
            "## Direct paths, dialler x accepter",
            "",
            *grid(stats),
            "",
            "## Against the goals",
            "",
            *(f"- {line}" for line in summary.lines()),
            "",
            png,
            "",
        ]
    )


def heatmap(stats: Sequence[PairStats], runs: int, path: Path) -> str:
    """The heat map PNG at ``path`` (see the module docstring); what became of it, for the
    report (matplotlib missing: a message, nothing written)."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        return NO_MATPLOTLIB
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    labels = [k.label for k in KINDS]
    cell = {(s.case.dialler.label, s.case.accepter.label): s for s in stats if not s.case.same_nat}
    same = {s.case.id: s for s in stats if s.case.same_nat}
    same_labels = [k.label for k in SAME_NAT]
    figure, (main, strip) = plt.subplots(
        2, 1, figsize=(11, 13), gridspec_kw={"height_ratios": [len(labels), 1], "hspace": 0.3}
    )
    colours = matplotlib.colormaps["YlGn"].with_extremes(bad="#dddddd")
    _cells(main, [[cell.get((d, a)) for a in labels] for d in labels], colours)
    main.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    main.set_yticks(range(len(labels)), labels)
    main.set_xlabel("accepter")
    main.set_ylabel("dialler")
    main.set_title(
        f"natkit connect() across the NAT lab, {runs} runs per pair\n"
        "colour: share of direct paths; text: success, direct, median connect s; "
        "dashed: relay expected; red, bold: a run failed",
        fontsize=10,
    )
    image = _cells(strip, [[same.get(label) for label in same_labels]], colours)
    strip.set_xticks(range(len(same_labels)), [k.removeprefix("same-nat-") for k in same_labels])
    strip.set_yticks([0], ["both behind\none NAT"])
    figure.colorbar(image, ax=[main, strip], shrink=0.6, label="direct share")
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return f"![heat map]({path.name})"


def _cells(axes: Any, rows: list[list[PairStats | None]], colours: Any) -> Any:
    """One heat-map panel: ``rows`` of pair statistics (None: not run)."""
    patches: Any = importlib.import_module("matplotlib.patches")
    values = [[math.nan if s is None else s.direct_share for s in row] for row in rows]
    image = axes.imshow(values, cmap=colours, vmin=0.0, vmax=1.0, aspect="equal")
    for i, row in enumerate(rows):
        for j, s in enumerate(row):
            if s is None:
                continue
            failed = s.connected < s.runs
            text = f"{pct(s.success)} ok\n{pct(s.direct_share)} direct\n{secs(s.median)} s"
            ink = "white" if s.direct_share > 0.6 else "black"
            weight = "bold" if failed else "normal"
            axes.text(j, i, text, ha="center", va="center", fontsize=7.5, color=ink, weight=weight)
            if failed:
                frame = {"linestyle": "-", "linewidth": 2.5, "edgecolor": "#d00000"}
            elif s.case.expected == "relay":
                frame = {"linestyle": "--", "linewidth": 1, "edgecolor": "black"}
            else:
                continue
            corner = (j - 0.46, i - 0.46)
            axes.add_patch(patches.Rectangle(corner, 0.92, 0.92, fill=False, **frame))
    return image


def settings_line(args: argparse.Namespace, cases: int) -> str:
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True, text=True, check=False, timeout=10,
        ).stdout.strip()  # fmt: skip
    except OSError:
        commit = ""
    upgrade = Timing(args.punch_timeout, args.upgrade_wait).upgrade
    return (
        f"{args.runs} runs x {cases} pairs, punch timeout {args.punch_timeout:g} s, "
        f"upgrade wait {upgrade:g} s, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, commit {commit or '?'}."
    )


def report(results: dict[str, list[PairResult]], args: argparse.Namespace) -> Summary:
    by_id = {case.id: case for case in CASES}
    stats = [PairStats.of(by_id[case_id], runs) for case_id, runs in results.items() if runs]
    summary = Summary.of(stats)
    args.out.mkdir(parents=True, exist_ok=True)
    png = heatmap(stats, args.runs, args.out / "connectivity.png")
    text = markdown(stats, summary, settings_line(args, len(stats)), png)
    (args.out / "connectivity.md").write_text(text)
    raw = {case_id: [r.as_dict() for r in runs] for case_id, runs in results.items()}
    (args.out / "connectivity.json").write_text(json.dumps(raw, indent=1))
    print()
    print("\n".join(table(stats)))
    print()
    for line in summary.lines():
        print(f"  {line}")
    written = ".md, .json" if png == NO_MATPLOTLIB else ".md, .json, .png"
    print(f"\n{png}" if png == NO_MATPLOTLIB else "")
    print(f"written: {args.out}/connectivity{written}")
    return summary


def interruptible() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt: the run stops, the lab is torn down and
    the runs so far are reported (a background job inherits SIGINT ignored)."""

    def interrupt(number: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20, help="connects per pair (default 20)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 runs per pair")
    p.add_argument("--pairs", help="comma-separated patterns of pair ids ('symmetric->*')")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    p.add_argument(
        "--punch-timeout",
        type=float,
        default=PunchConfig().timeout,
        help="seconds a punch looks for a direct path (default: the SDK's)",
    )
    p.add_argument(
        "--upgrade-wait",
        type=float,
        default=None,
        help="seconds a relayed connection waits for an upgrade to direct "
        "(default: the punch timeout; 0: count the path connect() returned on)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.runs = 2
    if args.runs < 1:
        p.error("--runs must be at least 1")
    cases = select(args.pairs)
    if not cases:
        p.error(f"no pair matches {args.pairs!r}")
    problem = missing_requirements()
    if problem is not None:
        print(f"connectivity: {problem}", file=sys.stderr)
        return 2
    if importlib.util.find_spec("matplotlib") is None:
        print(f"connectivity: {NO_MATPLOTLIB}; Markdown only", file=sys.stderr)
    interruptible()
    results = run(cases, args.runs, Timing(args.punch_timeout, args.upgrade_wait))
    summary = report(results, args)
    return 0 if summary.connected == summary.runs else 1


if __name__ == "__main__":
    sys.exit(main())
