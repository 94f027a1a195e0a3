"""Fang, Cao, Jia, Gong 2020's full-knowledge local model poisoning attacks, as FLTrust uses them.

FLTrust Sec. II-B and VI-A: the Krum attack and the Trim attack (against trimmed mean
and median), both in the framework of FLTrust eq. (6): move the global update the most
against s = sgn(g), the sign of the global update without attack. Written on updates
(FLTrust footnote 3: equivalent to Fang et al.'s formulation on local models).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..rules.common import pairwise_sq_distances
from ..rules.krum import krum_max_f, krum_scores
from .common import clean_of, honest_of, n_selected, rand_like_on
from .base import Attack, AttackView, register_attack

Tensor = torch.Tensor


def direction_sign(view: AttackView, attack: str) -> Tensor:
    """s = sgn(g) for g the mean of all clean updates (the global update without attack;
    Fang et al.'s estimate of the changing direction). Zero entries count as +1."""
    rows, _ = clean_of(view, attack)
    s = torch.sign(rows.mean(dim=0))
    return torch.where(s == 0, torch.ones_like(s), s)


def server_krum_f(view: AttackView, n: int, c: int) -> int:
    """The f the server's Krum uses: the rule's own f if it is a Krum-family rule with f set,
    else the number of corrupted clients (FLTrust Table I: f = m); at most Krum's maximum."""
    f = getattr(view.rule, "f", None) if getattr(view.rule, "name", "") in ("krum", "multikrum", "bulyan") \
        else None
    if f is None:
        f = c
    return min(int(f), krum_max_f(n))


@register_attack
@dataclass
class FangKrum(Attack):
    """Fang et al. 2020's Krum attack (full knowledge; FLTrust Sec. II-B, "Krum attack").

    The first corrupted client sends g'_1 = -lambda s (w'_1 = w_Re - lambda s on models), the
    others copies of it (within distance 0 of g'_1). lambda starts at Fang et al.'s upper bound

        1 / ((n - 2c - 1) sqrt(d)) * min_i sum_{l in Gamma_i} ||g_l - g_i|| + 1 / sqrt(d) * max_i ||g_i||

    over the benign updates (Gamma_i: the n - c - 2 benign updates closest to g_i) and is halved
    until Krum, run with the server's f on the attacked set, selects a corrupted update, or
    until it falls below ``threshold`` (then the last lambda is used). ``last_lambda`` and
    ``last_selected`` (whether Krum picked a corrupted row) record the outcome. Needs
    n > 2c + 1.
    """

    threshold: float = 1e-5
    name = "fang-krum"
    citation = "Fang et al. 2020 (Krum attack), as in FLTrust Sec. II-B and VI-A"
    knowledge = "honest-updates"

    def poison_updates(self, view: AttackView):
        honest = honest_of(view, self.name)
        c, d = view.own.shape
        n = n_selected(view)
        if n <= 2 * c + 1:
            raise ValueError(f"{self.name}: Fang et al.'s bound needs n > 2c + 1; got n={n} clients with c={c} "
                             "corrupted")
        s = direction_sign(view, self.name)
        dist = pairwise_sq_distances(honest).sqrt()
        h = honest.shape[0]
        k = min(max(n - c - 2, 0), h - 1)
        if k > 0:
            off = dist + torch.diag(torch.full((h,), float("inf"), dtype=dist.dtype, device=dist.device))
            near = off.topk(k, dim=1, largest=False).values.sum(dim=1).min()
        else:
            near = torch.zeros((), dtype=honest.dtype, device=honest.device)
        lam = float(near) / ((n - 2 * c - 1) * math.sqrt(d)) + \
            float(torch.linalg.vector_norm(honest, dim=1).max()) / math.sqrt(d)
        f = server_krum_f(view, n, c)
        selected = False
        while True:
            crafted = (-lam * s).expand(c, d)
            rows = torch.cat([crafted, honest])
            if int(krum_scores(pairwise_sq_distances(rows), f).argmin()) < c:
                selected = True
                break
            if lam / 2 < self.threshold:
                break
            lam /= 2
        self.last_lambda, self.last_selected = lam, selected
        return crafted.clone()


@register_attack
@dataclass
class FangTrim(Attack):
    """Fang et al. 2020's Trim attack against trimmed mean and median (full knowledge; FLTrust
    Sec. II-B, "Trim attack").

    Per coordinate j, with w_max,j / w_min,j the largest / smallest benign value and s_j the
    sign of the global update without attack: if s_j = -1, each corrupted client draws its
    value uniformly from [w_max,j, b w_max,j] (w_max,j > 0) or [w_max,j, w_max,j / b]
    (otherwise); if s_j = 1, from [w_min,j / b, w_min,j] (w_min,j > 0) or [b w_min,j, w_min,j].
    ``b`` = 2 as in Fang et al.
    """

    b: float = 2.0
    name = "fang-trim"
    citation = "Fang et al. 2020 (Trim attack), as in FLTrust Sec. II-B and VI-A"
    knowledge = "honest-updates"

    def poison_updates(self, view: AttackView):
        if not isinstance(self.b, (int, float)) or not self.b > 1:
            raise ValueError(f"{self.name}: b={self.b!r} must be > 1")
        return fang_trim(view, float(self.b), self.name)


def fang_trim(view: AttackView, b: float, attack: str) -> Tensor:
    honest = honest_of(view, attack)
    s = direction_sign(view, attack)
    wmax, wmin = honest.amax(dim=0), honest.amin(dim=0)
    # s = -1: push above w_max; s = +1: push below w_min.
    lo_up = wmax
    hi_up = torch.where(wmax > 0, b * wmax, wmax / b)
    lo_dn = torch.where(wmin > 0, wmin / b, b * wmin)
    hi_dn = wmin
    lo = torch.where(s < 0, lo_up, lo_dn)
    hi = torch.where(s < 0, hi_up, hi_dn)
    u = rand_like_on(view.own, view.generator)
    return lo + u * (hi - lo)
