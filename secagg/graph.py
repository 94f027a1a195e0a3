"""Communication graphs of SecAgg and SecAgg+, and the SecAgg+ parameters that meet its bound.

Bonawitz et al. 2017 mask every pair of clients and share every client's secrets with
all others: the complete graph, quadratic in n. Bell et al. 2020 ("Secure Single-Server
Aggregation with (Poly)Logarithmic Overhead", CCS; SecAgg+) restrict masks and shares to
the edges of a sparse random graph: each client masks with its neighbours only and
Shamir-shares its secrets among them (and itself) with a per-client threshold t_s.

The conditions of Bell et al. on the graph, for n clients of which a set C of at most
gamma n is corrupt (colluding with the server) and a set D of at most delta n drops,
both fixed before the graph is drawn (the graph is a fresh public coin per instance):

- security, except with probability 2^-sigma: (S1) every honest client u has fewer than
  t_s corrupt share holders, |N(u) ∩ C| < t_s (else the corrupt holders give the server
  the secret the protocol withholds, b_u or s_u^SK, and it unmasks x_u); (S2) the graph
  on the honest surviving clients is connected (else the server learns the sum of each
  component, and an isolated client's input in full);
- correctness, except with probability 2^-eta: (C1) every client keeps at least t_s
  neighbours outside D, so every secret the server needs can be reconstructed.

:func:`secagg_plus_parameters` takes the paper's random graph, Erdős–Rényi G(n, p) with
p = k / (n - 1) (expected degree k; every edge independent, so each condition has an
exact binomial form), bounds each failure by a union bound computed exactly,

- S1: (n - c) P[Bin(c, p) >= t_s], c = floor(gamma n),
- S2: sum_{s=1}^{floor(m/2)} C(m, s) (1 - p)^{s (m - s)}, m = n - c - d (no cut of the m
  honest survivors is edge-free),
- C1: n P[Bin(n - 1 - d, p) < t_s], d = floor(delta n),

and returns the smallest k (with the t_s balancing the two margins) for which
S1 + S2 <= 2^-sigma and C1 <= 2^-eta. The worst case is c and d at their maxima and D
disjoint from C (each bound grows with c and d; S2 shrinks with m once p m >~ 2, which
every feasible k satisfies). Defaults: sigma = 40 (the paper's statistical security),
eta = 30 (a correctness failure is a clean abort, never a wrong sum; 2^-30 per instance
keeps an abort unlikely over a long training run). :func:`exposure_rate` measures the
same events on sampled graphs.

``neighbors=k`` (an int) gives a random k-regular graph (:func:`random_regular_graph`,
``networkx``) that is not checked against the bound; :func:`harary_graph` and
:func:`default_degree` / :func:`default_share_threshold` (the relabelled ring lattice with
k = 2 ceil(log2 n) and a majority threshold used before) remain for comparisons only.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["SIGMA", "ETA", "Adjacency", "complete_graph", "harary_graph", "random_regular_graph",
           "erdos_renyi_graph", "adjacency_from", "default_degree", "default_share_threshold", "is_complete",
           "GraphParameters", "erdos_renyi_bounds", "secagg_plus_parameters", "complete_graph_parameters",
           "exposure_rate", "fraction_count"]

SIGMA = 40   # statistical security: P[an honest client is exposed] <= 2^-40
ETA = 30     # correctness: P[the graph makes the instance abort] <= 2^-30, at the assumed dropouts
_LN2 = math.log(2)

Adjacency = List[List[int]]   # adjacency[u] = sorted neighbours of u (no self-loops)


def complete_graph(n: int) -> Adjacency:
    """The complete graph on n clients: SecAgg (Bonawitz et al. 2017, Fig. 4)."""
    return [[v for v in range(n) if v != u] for u in range(n)]


def _check_degree(n: int, k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"neighbors={k!r}: the degree k must be an int")
    if not 1 <= k <= n - 1:
        raise ValueError(f"neighbors={k} must be in [1, n - 1 = {n - 1}] for n={n} clients "
                         "(use neighbors=None for the complete graph)")
    if k % 2 == 1 and n % 2 == 1:
        raise ValueError(f"no {k}-regular graph on n={n} clients exists (k * n must be even); "
                         f"use k={k + 1 if k + 1 <= n - 1 else k - 1}")


def harary_graph(n: int, k: int, permutation: Sequence[int] = None) -> Adjacency:
    """Harary graph H_{k,n}: the k-regular ring lattice, relabelled by ``permutation``.

    The SecAgg+ graph used before (for comparisons, :func:`exposure_rate`): k/2 removed
    consecutive ring positions cut the ring, so it is far less robust than a random graph."""
    _check_degree(n, k)
    perm = np.arange(n) if permutation is None else np.asarray(permutation)
    if sorted(perm.tolist()) != list(range(n)):
        raise ValueError("permutation must be a permutation of range(n)")
    adj = [set() for _ in range(n)]
    for i in range(n):
        a = int(perm[i])
        for j in range(1, k // 2 + 1):
            b = int(perm[(i + j) % n])
            adj[a].add(b)
            adj[b].add(a)
        if k % 2 == 1:
            b = int(perm[(i + n // 2) % n])
            adj[a].add(b)
            adj[b].add(a)
    return [sorted(s) for s in adj]


def random_regular_graph(n: int, k: int, rng: np.random.Generator) -> Adjacency:
    """A random k-regular graph (``networkx.random_regular_graph``, Steger-Wormald), relabelled
    by a uniform permutation so that every client's neighbourhood is a uniform k-subset."""
    import networkx as nx
    _check_degree(n, k)
    if k == n - 1:
        return complete_graph(n)
    g = nx.random_regular_graph(k, n, seed=random.Random(int(rng.integers(2 ** 63))))
    perm = rng.permutation(n)
    adj = [[] for _ in range(n)]
    for a, b in g.edges():
        pa, pb = int(perm[a]), int(perm[b])
        adj[pa].append(pb)
        adj[pb].append(pa)
    return [sorted(nb) for nb in adj]


def _er_edges(n: int, p: float, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    # G(n, p): the number of edges is Bin(n(n-1)/2, p) and, given it, the edge set is a uniform
    # subset of the pairs; O(edges) instead of one draw per pair.
    pairs = n * (n - 1) // 2
    m = int(rng.binomial(pairs, p)) if pairs else 0
    idx = rng.choice(pairs, size=m, replace=False).astype(np.int64) if m else np.zeros(0, np.int64)
    # Pair index -> (i, j), i < j, row-major over the upper triangle; float root, then exact fix-up.
    b = 2 * n - 1
    i = np.floor((b - np.sqrt(np.maximum(b * b - 8.0 * idx, 0.0))) / 2).astype(np.int64)
    start = lambda r: r * (2 * n - r - 1) // 2   # noqa: E731 - first pair index of row r
    i = np.where(start(i) > idx, i - 1, i)
    i = np.where(start(i + 1) <= idx, i + 1, i)
    j = idx - start(i) + i + 1
    return i, j


def _lists(n: int, a: np.ndarray, b: np.ndarray) -> Adjacency:
    src = np.concatenate([a, b])
    dst = np.concatenate([b, a])
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    cuts = np.searchsorted(src, np.arange(n + 1))
    return [dst[cuts[u]:cuts[u + 1]].tolist() for u in range(n)]


def erdos_renyi_graph(n: int, p: float, rng: np.random.Generator) -> Adjacency:
    """Erdős–Rényi G(n, p): every pair of clients is an edge independently with probability p
    (the random graph of Bell et al. 2020 that :func:`secagg_plus_parameters` is computed for)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p={p!r} must be a probability in [0, 1]")
    return _lists(n, *_er_edges(n, p, rng))


def adjacency_from(neighbors, n: int) -> Adjacency:
    """Validate an explicit communication graph (Bell et al. 2020 allow any graph G): an
    [n, n] 0/1 (or bool) symmetric matrix with zero diagonal, or a sequence of n
    neighbour lists. Returns sorted neighbour lists."""
    if hasattr(neighbors, "shape") and len(getattr(neighbors, "shape")) == 2:
        mat = np.asarray(neighbors.cpu() if hasattr(neighbors, "cpu") else neighbors)
        if mat.shape != (n, n):
            raise ValueError(f"adjacency matrix has shape {mat.shape}, expected ({n}, {n}) for n={n} clients")
        mat = mat.astype(bool)
        if not (mat == mat.T).all():
            raise ValueError("adjacency matrix must be symmetric (masks and shares go both ways on an edge)")
        if mat.diagonal().any():
            raise ValueError("adjacency matrix must have a zero diagonal (a client is not its own neighbour)")
        return [np.flatnonzero(mat[u]).tolist() for u in range(n)]
    try:
        lists = [sorted({int(v) for v in nb}) for nb in neighbors]
    except TypeError:
        raise TypeError("neighbors must be None, an int degree k, 'auto', an [n, n] adjacency matrix, "
                        f"or a list of n neighbour lists; got {type(neighbors).__name__}") from None
    if len(lists) != n:
        raise ValueError(f"neighbors has {len(lists)} neighbour lists, expected one per client (n={n})")
    for u, nb in enumerate(lists):
        bad = [v for v in nb if not 0 <= v < n or v == u]
        if bad:
            raise ValueError(f"client {u} lists invalid neighbour(s) {bad} (must be other clients in [0, {n}))")
        for v in nb:
            if u not in lists[v]:
                raise ValueError(f"neighbors is not symmetric: {v} is a neighbour of {u} but not vice versa")
    return lists


def is_complete(adj: Adjacency) -> bool:
    """Whether ``adj`` is the complete graph of Bonawitz et al. 2017 (every pair masked)."""
    n = len(adj)
    return all(len(nb) == n - 1 for nb in adj)


def default_degree(n: int) -> int:
    """The degree used before this module derived parameters: k = 2 ceil(log2 n), capped at
    n - 1 and made feasible. Of the form Bell et al. 2020 prescribe (k = O(log n)) but not
    derived from their bound: at n = 100 with 33 corrupt clients most graphs expose an honest
    client (docs/security.md). Kept for comparisons; use ``neighbors="auto"``."""
    if n <= 2:
        return max(n - 1, 0)
    k = min(n - 1, 2 * math.ceil(math.log2(n)))
    if k % 2 == 1 and n % 2 == 1:
        k -= 1
    return k


def default_share_threshold(holders: int) -> int:
    """A strict majority of a client's share holders (itself and its neighbours), mirroring
    t > n/2 of the complete graph (Bonawitz et al. 2017, Sec. 6): the per-client threshold of
    an explicit SecAgg+ graph. ``neighbors="auto"`` derives t_s from the bound instead."""
    return holders // 2 + 1


# -- the bound --------------------------------------------------------------------------


def fraction_count(name: str, fraction, n: int) -> int:
    """floor(fraction * n): the number of clients a fraction in [0, 1) of n allows."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ValueError(f"{name}={fraction!r} must be a fraction in [0, 1)")
    return int(math.floor(fraction * n + 1e-9))


@lru_cache(maxsize=8)
def _log_factorials(N: int) -> np.ndarray:
    # log v! for v = 0..N (read-only: shared by the callers).
    out = np.array([math.lgamma(v + 1) for v in range(N + 1)])
    out.flags.writeable = False
    return out


def _log_pmf(N: int, p: float) -> np.ndarray:
    j = np.arange(N + 1)
    lg = _log_factorials(N)
    return lg[N] - lg - lg[::-1] + j * math.log(p) + (N - j) * math.log1p(-p)


def _log_sf(N: int, p: float, ts: np.ndarray) -> np.ndarray:
    # log P[Bin(N, p) >= t] for each t in ts (-inf beyond N).
    tail = np.logaddexp.accumulate(_log_pmf(N, p)[::-1])[::-1]
    out = np.full(len(ts), -np.inf)
    ok = ts <= N
    out[ok] = tail[np.maximum(ts[ok], 0)]
    return out


def _log_cdf_below(N: int, p: float, ts: np.ndarray) -> np.ndarray:
    # log P[Bin(N, p) < t] for each t in ts.
    head = np.logaddexp.accumulate(_log_pmf(N, p))
    out = np.zeros(len(ts))
    out[ts <= 0] = -np.inf
    mid = (ts > 0) & (ts <= N)
    out[mid] = head[ts[mid] - 1]
    return out


def _log_disconnected(m: int, p: float) -> float:
    # Union bound over the cuts (S, rest) of m vertices, |S| <= m/2: P[G(m, p) is disconnected].
    if m <= 1:
        return -math.inf
    s = np.arange(1, m // 2 + 1)
    lg = _log_factorials(m)
    terms = lg[m] - lg[s] - lg[m - s] + s * (m - s) * math.log1p(-p)
    top = terms.max()
    return float(top + math.log(np.exp(terms - top).sum()))


def erdos_renyi_bounds(n: int, k: float, share_thresholds, corrupt: int, dropped: int) -> Tuple[np.ndarray, np.ndarray]:
    """(security bits, correctness bits) of G(n, k/(n-1)) for each t_s in ``share_thresholds``:
    -log2 of the union bounds S1 + S2 and C1 of the module docstring, with ``corrupt`` = c
    and ``dropped`` = d clients."""
    p = k / (n - 1)
    ts = np.atleast_1d(np.asarray(share_thresholds, dtype=np.int64))
    m = n - corrupt - dropped
    log_s2 = _log_disconnected(m, p)
    log_s1 = (math.log(n - corrupt) + _log_sf(corrupt, p, ts)) if corrupt > 0 and n > corrupt \
        else np.full(len(ts), -np.inf)
    log_sec = np.logaddexp(log_s1, log_s2)
    log_cor = math.log(n) + _log_cdf_below(n - 1 - dropped, p, ts)
    return -log_sec / _LN2, -log_cor / _LN2


@dataclass(frozen=True)
class GraphParameters:
    """The communication graph an instance uses and what Bell et al.'s bound says of it.

    ``graph``: "erdos-renyi" (``neighbors="auto"``, expected degree ``k``), "complete",
    "k-regular" (an int ``neighbors``) or "explicit". ``security_bits`` / ``correctness_bits``:
    -log2 of the failure bounds (inf when the condition holds with certainty; None when not
    evaluated). ``meets``: both reach sigma and eta (None: not evaluated). ``k_needed``: the
    expected degree ``neighbors="auto"`` needs for these fractions (None: only the complete
    graph meets them)."""

    graph: str
    n: int
    k: Optional[float]
    share_threshold: int
    threshold: int
    corrupt_fraction: float
    dropout_fraction: float
    corrupt_clients: int
    dropout_clients: int
    sigma: int
    eta: int
    security_bits: Optional[float]
    correctness_bits: Optional[float]
    meets: Optional[bool]
    k_needed: Optional[int]
    note: str = ""

    def as_dict(self) -> Dict:
        return asdict(self)


def complete_graph_parameters(n: int, threshold: int, corrupt_fraction: float, dropout_fraction: float, *,
                              sigma: int = SIGMA, eta: int = ETA, k_needed: Optional[int] = None,
                              note: str = "") -> GraphParameters:
    """The complete graph with t_s = t: secure iff c < t (the corrupt clients alone cannot
    reach the threshold), correct iff n - d >= t; both hold or fail with certainty."""
    c = fraction_count("corrupt_fraction", corrupt_fraction, n)
    d = fraction_count("dropout_fraction", dropout_fraction, n)
    sec = math.inf if c < threshold else 0.0
    cor = math.inf if n - d >= threshold else 0.0
    return GraphParameters("complete", n, n - 1, threshold, threshold, float(corrupt_fraction),
                           float(dropout_fraction), c, d, sigma, eta, sec, cor, sec >= sigma and cor >= eta,
                           k_needed, note)


@lru_cache(maxsize=256)
def _search(n: int, c: int, d: int, sigma: int, eta: int) -> Optional[Tuple[int, int, float, float]]:
    # Smallest expected degree k <= n - 2 whose bounds meet (sigma, eta) for some t_s.
    m = n - c - d
    ts = np.arange(1, n + 1)
    for k in range(1, n - 1):
        p = k / (n - 1)
        if m > 1 and -_log_disconnected(m, p) / _LN2 < sigma:
            continue
        sec, cor = erdos_renyi_bounds(n, k, ts, c, d)
        ok = (sec >= sigma) & (cor >= eta)
        if ok.any():
            margin = np.minimum(sec - sigma, cor - eta)
            best = int(np.argmax(np.where(ok, margin, -np.inf)))
            return k, int(ts[best]), float(sec[best]), float(cor[best])
    return None


def secagg_plus_parameters(n: int, corrupt_fraction: float, dropout_fraction: float, *, threshold: Optional[int] = None,
                           sigma: int = SIGMA, eta: int = ETA) -> GraphParameters:
    """The SecAgg+ graph ``neighbors="auto"`` uses: the smallest expected degree k of G(n, k/(n-1))
    and the t_s that meet Bell et al.'s conditions (module docstring) for up to
    ``corrupt_fraction`` corrupt and ``dropout_fraction`` dropped clients, or, when no
    k <= n - 2 does, the complete graph with t_s = ``threshold``.

    ``meets`` is False only when even the complete graph fails (c >= t or n - d < t): the
    caller refuses those parameters."""
    for name, v in (("sigma", sigma), ("eta", eta)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r} must be a positive int (bits)")
    c = fraction_count("corrupt_fraction", corrupt_fraction, n)
    d = fraction_count("dropout_fraction", dropout_fraction, n)
    t = threshold if threshold is not None else n - d
    if n < 4 or d >= n - 1:
        found = None
    else:
        found = _search(n, c, d, sigma, eta)
    if found is None or (threshold is not None and n - d < threshold):
        return complete_graph_parameters(n, t, corrupt_fraction, dropout_fraction, sigma=sigma, eta=eta,
                                         note="no sparse graph meets the bound: the complete graph")
    k, ts, sec, cor = found
    return GraphParameters("erdos-renyi", n, k, ts, t, float(corrupt_fraction), float(dropout_fraction), c, d,
                           sigma, eta, sec, cor, True, k)


# -- measurement ------------------------------------------------------------------------


def _sample_edges(kind: str, n: int, k: float, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    if kind == "erdos-renyi":
        return _er_edges(n, k / (n - 1), rng)
    if kind == "harary":   # the edges of harary_graph(n, k, perm), vectorized
        k = int(k)
        _check_degree(n, k)
        perm = rng.permutation(n)
        i = np.arange(n)
        steps = list(range(1, k // 2 + 1)) + ([n // 2] if k % 2 else [])
        a = np.concatenate([perm[i] for _ in steps])
        b = np.concatenate([perm[(i + j) % n] for j in steps])
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        pairs = np.unique(lo * n + hi)          # the antipodal step lists each edge twice when n is even
        return pairs // n, pairs % n
    if kind == "k-regular":
        adj = random_regular_graph(n, int(k), rng)
    else:
        raise ValueError(f"graph={kind!r}; choose 'erdos-renyi', 'k-regular' or 'harary'")
    a = np.array([u for u, nb in enumerate(adj) for v in nb if u < v], dtype=np.int64)
    b = np.array([v for u, nb in enumerate(adj) for v in nb if u < v], dtype=np.int64)
    return a, b


def exposure_rate(n: int, k: float, share_threshold: int, corrupt_fraction: float, dropout_fraction: float = 0.0,
                  *, graph: str = "erdos-renyi", trials: int = 10_000, seed: int = 0) -> Dict[str, float]:
    """How often a sampled SecAgg+ graph exposes an honest client (the events of the module
    docstring, measured instead of bounded).

    Per trial: a graph of kind ``graph`` ("erdos-renyi" with expected degree ``k``, as
    ``neighbors="auto"`` draws; "k-regular"; "harary", the relabelled ring lattice used
    before), a uniformly random corrupt set of floor(gamma n) clients and a uniformly random
    set of floor(delta n) dropouts among the others, drawn independently of the graph (the
    threat model: corruption and dropouts are fixed before the instance's graph coin). With
    S the honest survivors, it records: ``share_exposed`` (some u in S has >= t_s corrupt share
    holders: S1), ``isolated`` (some u in S has no neighbour in S: its masked input is
    unmasked with the masks the server reconstructs and the corrupt know), ``exposed``
    (either: the server learns an honest input in full), ``disconnected`` (the graph on S
    is not connected: the server learns partial sums; S2) and ``aborts`` (some client has
    fewer than t_s neighbours outside the dropouts: the instance may abort; C1). Returns the
    fraction of trials with each event, and ``trials``. ``seed`` seeds this measurement
    (nothing secret).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials={trials!r} must be a positive int")
    c = fraction_count("corrupt_fraction", corrupt_fraction, n)
    d = fraction_count("dropout_fraction", dropout_fraction, n)
    if c + d >= n:
        raise ValueError(f"corrupt ({c}) and dropped ({d}) clients leave no honest survivor of n={n}")
    rng = np.random.default_rng(seed)
    counts = {"share_exposed": 0, "isolated": 0, "exposed": 0, "disconnected": 0, "aborts": 0}
    for _ in range(trials):
        a, b = _sample_edges(graph, n, k, rng)
        order = rng.permutation(n)
        corrupt = np.zeros(n, bool)
        corrupt[order[:c]] = True
        dropped = np.zeros(n, bool)
        dropped[order[c:c + d]] = True
        alive = ~(corrupt | dropped)          # S: neither corrupt nor dropped
        bad = np.bincount(a[corrupt[b]], minlength=n) + np.bincount(b[corrupt[a]], minlength=n)
        live = (np.bincount(a[~dropped[b]], minlength=n) + np.bincount(b[~dropped[a]], minlength=n))
        share = bool((bad[alive] >= share_threshold).any())
        inside = alive[a] & alive[b]
        a_s, b_s = a[inside], b[inside]
        deg = np.bincount(a_s, minlength=n) + np.bincount(b_s, minlength=n)
        m = int(alive.sum())
        isolated = m > 1 and bool((deg[alive] == 0).any())
        idx = np.cumsum(alive) - 1
        mat = coo_matrix((np.ones(len(a_s)), (idx[a_s], idx[b_s])), shape=(m, m))
        split = connected_components(mat, directed=False)[0] > 1
        counts["share_exposed"] += share
        counts["isolated"] += isolated
        counts["exposed"] += share or isolated
        counts["disconnected"] += split
        counts["aborts"] += bool((live < share_threshold).any())
    out = {key: v / trials for key, v in counts.items()}
    out["trials"] = trials
    return out


def exposure_table(ns: Sequence[int] = (100, 1000), gammas: Sequence[float] = (0.1, 0.2, 1 / 3),
                   delta: float = 0.1, *, trials: int = 10_000, seed: int = 0) -> List[Dict]:
    """docs/security.md's table: for each n and gamma, the (k, t_s) of ``neighbors="auto"`` and
    the old default (the relabelled ring lattice, k = 2 ceil(log2 n), majority t_s), each with
    its :func:`exposure_rate` over ``trials`` sampled graphs (corrupt set and dropouts drawn as
    the threat model says). ``python -m secagg.graph [TRIALS]`` prints it."""
    rows = []
    for n in ns:
        for gamma in gammas:
            new = secagg_plus_parameters(n, gamma, delta, threshold=2 * n // 3 + 1)
            k_old = default_degree(n)
            t_old = default_share_threshold(k_old + 1)
            rows.append({
                "n": n, "gamma": gamma, "delta": delta, "k": new.k, "t_s": new.share_threshold,
                "graph": new.graph, "security_bits": new.security_bits, "correctness_bits": new.correctness_bits,
                "new": exposure_rate(n, new.k, new.share_threshold, gamma, delta, trials=trials, seed=seed)
                if new.graph == "erdos-renyi" else None,
                "k_old": k_old, "t_s_old": t_old,
                "old": exposure_rate(n, k_old, t_old, gamma, delta, graph="harary", trials=trials, seed=seed)})
    return rows


def _main(argv: Optional[Sequence[str]] = None) -> None:   # python -m secagg.graph [TRIALS]
    import sys
    import time
    args = list(sys.argv[1:] if argv is None else argv)
    trials = int(args[0]) if args else 10_000
    t0 = time.perf_counter()
    rows = exposure_table(trials=trials)
    print(f"| n | gamma | k, t_s (auto) | bound: security, correctness | exposed (auto) | disconnected (auto) "
          f"| aborts (auto) | old k, t_s | exposed (old) | disconnected (old) | aborts (old) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        new, old = r["new"] or {}, r["old"]
        print(f"| {r['n']} | {r['gamma']:.3g} | {r['k']}, {r['t_s']} | 2^-{r['security_bits']:.1f}, "
              f"2^-{r['correctness_bits']:.1f} | {new.get('exposed', 0) * trials:.0f} / {trials} | "
              f"{new.get('disconnected', 0) * trials:.0f} / {trials} | {new.get('aborts', 0) * trials:.0f} / {trials} | "
              f"{r['k_old']}, {r['t_s_old']} | {old['exposed']:.4f} | {old['disconnected']:.4f} | "
              f"{old['aborts']:.4f} |")
    print(f"({trials} graphs per cell, dropout fraction {rows[0]['delta']}, {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    _main()
