"""Communication graphs: complete (SecAgg) and random k-regular (SecAgg+).

Bonawitz et al. 2017 mask every pair of clients and share every client's secrets
with all others: the complete graph, whose cost is quadratic in n. Bell et al.
2020 ("Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS;
the SecAgg+ protocol) restrict masks and shares to the edges of a sparse random
graph of degree k = O(log n): each client masks with its k neighbours only and
Shamir-shares its secrets among them with a per-client threshold t_local.

Bell et al. analyse random graphs of degree O(log n). Our random k-regular graph
is the Harary graph H_{k,n} (clients on a ring, each joined to its k/2 nearest on
each side, plus the antipode when k is odd) under a uniformly random relabelling
chosen by the server per instance: every client has exactly k neighbours, its
neighbourhood is a uniformly random set, and the graph stays connected after up
to k - 1 dropouts.

Default parameters (:func:`default_degree`, :func:`default_share_threshold`) are
ours, of the form the paper prescribes (k = Theta(log n), t_local a majority of the
k + 1 share holders). The paper's concrete (k, t) depend on the assumed fractions
of corrupt and dropped clients and the target failure probability; take them
from the paper for a deployment.
"""
from __future__ import annotations

import math
from typing import List, Sequence

import numpy as np

__all__ = ["Adjacency", "complete_graph", "harary_graph", "random_regular_graph",
           "adjacency_from", "default_degree", "default_share_threshold", "is_complete"]

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

    Client ``permutation[i]`` sits at ring position i; the communication graph of
    SecAgg+ (Bell et al. 2020) when the permutation is random.
    """
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
    """A random k-regular graph for SecAgg+ (Bell et al. 2020): H_{k,n} under a random
    relabelling drawn from ``rng``."""
    _check_degree(n, k)
    return harary_graph(n, k, rng.permutation(n))


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
        raise TypeError("neighbors must be None, an int degree k, an [n, n] adjacency matrix, "
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
    """Default SecAgg+ degree: k = 2 * ceil(log2 n), capped at n - 1 and made feasible.

    Bell et al. 2020 show k = O(log n) suffices; the constant 2 is our choice (n = 100
    gives k = 14, n = 10^4 gives k = 28).
    """
    if n <= 2:
        return max(n - 1, 0)
    k = min(n - 1, 2 * math.ceil(math.log2(n)))
    if k % 2 == 1 and n % 2 == 1:
        k -= 1
    return k


def default_share_threshold(holders: int) -> int:
    """Default per-client threshold of SecAgg+ (Bell et al. 2020): a strict majority of a
    client's share holders (itself and its k neighbours), mirroring t > n/2 of the
    complete graph (Bonawitz et al. 2017, Sec. 6)."""
    return holders // 2 + 1
