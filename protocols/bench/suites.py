"""The bench suites by name, the optional peers, and running one suite or all of them.

Suites are imported by name when they run (:func:`suite_module`): some need an optional
peer (flwr, geom_median, byzfl) that a plain install lacks.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import time
from typing import Callable, Dict, List, Optional, Tuple

# suite name -> module (relative to this package) exposing run(quick=..., device=...)
SUITES: Dict[str, str] = {
    "clients": ".clients",
    "dp": ".dp",
    "flower": ".flower",
    "keystream": ".keystream",
    "oracle": ".oracle",
    "rfa": ".rfa",
    "rules": ".rules",
    "run": ".run",
    "scale": ".scale",
    "secagg": ".secagg",
}
# the order of `fedaudit bench all` (cheap and self-contained first)
ALL_ORDER = ("oracle", "keystream", "secagg", "flower", "rfa", "rules", "clients", "dp", "run", "scale")
# optional peers (the `bench` extra): import name -> (suite that uses it, how to install)
PEERS: Dict[str, Tuple[str, str]] = {
    "geom_median": ("rfa", "pip install geom_median"),
    "byzfl": ("rules", "pip install --no-deps byzfl  (it requires its own torch and torchvision; --no-deps keeps yours)"),
    "flwr": ("flower", "pip install flwr"),
}
# the row keys every row of bench.json carries
ROW_KEYS = ("suite", "case", "seconds", "baseline", "ratio", "n", "d", "device")


def peer_status() -> Dict[str, str]:
    """For each optional peer: '' if importable, else why it is skipped (and how to install it)."""
    out = {}
    for name, (_, how) in PEERS.items():
        out[name] = "" if importlib.util.find_spec(name) is not None else f"not importable ({how})"
    return out


def suite_module(name: str):
    if name not in SUITES:
        raise ValueError(f"unknown bench suite {name!r}; choose one of {sorted(SUITES)} or 'all'")
    return importlib.import_module(SUITES[name], __package__)


def run_suite(name: str, *, quick: bool = False, device: str = "cpu", clients: Optional[int] = None,
              dim: Optional[int] = None) -> List[dict]:
    """Run one suite; ``clients`` / ``dim`` go to its ``run`` only if given, and a suite whose
    ``run`` has no such parameter refuses them (ValueError) instead of ignoring them."""
    module = suite_module(name)
    params = inspect.signature(module.run).parameters
    kwargs = {}
    for key, value, flag in (("clients", clients, "--clients"), ("dim", dim, "--dim")):
        if value is None:
            continue
        if key not in params:
            takes = [s for s in sorted(SUITES) if s != name and _takes(s, key)]
            raise ValueError(f"bench suite {name!r} has a fixed {'number of clients' if key == 'clients' else 'dimension'}"
                             f" and does not take {flag}; drop {flag}"
                             + (f" (suites that take it: {', '.join(takes)})" if takes else ""))
        kwargs[key] = value
    rows = module.run(quick=quick, device=device, **kwargs)
    for r in rows:
        r.setdefault("suite", name)
        r.setdefault("device", str(device))
        r.setdefault("n", None)
        r.setdefault("d", None)
    return rows


def _takes(name: str, key: str) -> bool:
    try:
        return key in inspect.signature(suite_module(name).run).parameters
    except Exception:                     # a suite that cannot even be imported takes nothing
        return False


def run_all(*, quick: bool = False, device: str = "cpu", progress: Optional[Callable[[str], None]] = None,
            suites: Optional[List[str]] = None) -> dict:
    """Every suite of :data:`ALL_ORDER` in one process.

    Returns ``{"rows": [...], "skipped": {suite or peer: why}, "failed": {suite: error},
    "seconds": {suite: wall seconds}}``. The ``flower`` suite runs only when ``flwr`` is
    importable; a suite that raises is recorded in ``failed`` (and the report says so)
    while the others still run.
    """
    peers = peer_status()
    order = list(suites or ALL_ORDER)
    skipped = {name: why for name, why in peers.items() if why and PEERS[name][0] in order}
    rows: List[dict] = []
    failed: Dict[str, str] = {}
    seconds: Dict[str, float] = {}
    for name in order:
        if name == "flower" and peers["flwr"]:
            skipped["flower"] = f"suite skipped: flwr {peers['flwr']}"
            continue
        if progress is not None:
            progress(name)
        t0 = time.perf_counter()
        try:
            rows += run_suite(name, quick=quick, device=device)
        except Exception as err:           # recorded and reported, never hidden
            failed[name] = f"{type(err).__name__}: {err}"
        seconds[name] = time.perf_counter() - t0
    return {"rows": rows, "skipped": skipped, "failed": failed, "seconds": seconds}
