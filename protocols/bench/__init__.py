"""Benchmarks: ratios measured side by side in one run (``fedaudit bench SUITE``).
May import secagg, rfa, dp, the runner and the protocols parts below it; never experiments or the CLI.

Each suite is a module in this package exposing ``run(*, quick, device) -> list[dict]``
whose rows are ``{case, seconds, baseline, ratio}`` (``ratio`` = seconds / the
baseline case's seconds, both measured in the same run, median of repeats), plus
optional extra keys (n, d, goal, goal_met, note). Register it in :data:`protocols.bench.suites.SUITES`.
A suite that can change its number of clients or dimension takes ``clients=`` and
``dim=`` keyword arguments too (``fedaudit bench SUITE --clients N --dim D``);
:func:`run_suite` refuses those options for a suite whose ``run`` does not.

``fedaudit bench all`` (:func:`run_all`) runs every suite and
:mod:`protocols.bench.report` writes ``bench.json`` and ``bench.md``.
"""
from protocols.bench.suites import (ALL_ORDER, PEERS, ROW_KEYS, SUITES, peer_status, run_all, run_suite,
                                    suite_module)
from protocols.bench.report import format_rows
from protocols.bench.timing import add_ratios, parse_count, sizes, synchronize, time_interleaved, time_median

__all__ = ["ALL_ORDER", "PEERS", "ROW_KEYS", "SUITES", "format_rows", "peer_status", "run_all", "run_suite",
           "suite_module", "add_ratios", "parse_count", "sizes", "synchronize", "time_interleaved", "time_median"]
