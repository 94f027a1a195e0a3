"""FLTrust's adaptive attack (Cao et al. 2021, Sec. V, Alg. 3)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .common import clean_of, honest_of
from .base import Attack, AttackView, register_attack
from .fang import fang_trim

Tensor = torch.Tensor


@register_attack
@dataclass
class FLTrustAdaptive(Attack):
    """The adaptive attack on FLTrust (Cao et al. 2021, Sec. V-B, eqs. (7)-(11), Alg. 3).

    The corrupted clients choose unit vectors e'_i maximising
    h(e') = ||g0|| s^T (g - g'(e')) (eq. (10)), with g FLTrust's aggregate of the clean updates
    (eq. (7)), g' the aggregate with the e'_i in place of the corrupted clients' updates (eq. (8))
    and s = sgn(g). e'_i start from the Trim attack's updates (normalised); then, V times over
    the corrupted clients and Q times each, a zeroth-order gradient
    (h(e'_i + gamma u) - h(e'_i)) / gamma * u with u ~ N(0, sigma^2 I) (eq. (11)) is followed with
    step eta and e'_i projected back to the unit sphere. They submit g'_i = ||g0|| e'_i.
    Defaults from Sec. VI-A: sigma^2 = 0.5, gamma = 0.005, eta = 0.01, V = Q = 10.

    Knowledge "honest-updates" (the paper's full-knowledge attacker: ||g0||, e0, every e_i and
    c_i). Assumptions: FLTrust's standard rule (ReLU, full normalisation); the server's root
    update g0 comes from ``view.server_update`` when the simulation provides it, and is
    otherwise estimated by the mean of the clean updates (the attacker's data is assumed to be
    distributed like the root data). ``view.rule`` is not replayed: eq. (8) is FLTrust's rule.
    """

    sigma2: float = 0.5
    gamma: float = 0.005
    eta: float = 0.01
    V: int = 10
    Q: int = 10
    name = "fltrust-adaptive"
    citation = "Cao et al. 2021 (FLTrust), Sec. V, Alg. 3"
    knowledge = "honest-updates"

    def poison_updates(self, view: AttackView):
        for key in ("sigma2", "gamma", "eta"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or not 0 < v < float("inf"):
                raise ValueError(f"{self.name}: {key}={v!r} must be a finite number > 0")
        for key in ("V", "Q"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{self.name}: {key}={v!r} must be an integer >= 0")
        honest = honest_of(view, self.name)
        rows, _ = clean_of(view, self.name)
        dtype, device = honest.dtype, honest.device
        tiny = torch.finfo(dtype).tiny
        g0 = view.server_update
        g0 = rows.mean(dim=0) if g0 is None else torch.as_tensor(g0).to(device, dtype)
        n0 = torch.linalg.vector_norm(g0)
        if not n0 > 0:
            raise ValueError(f"{self.name}: the server update estimate is the zero vector")
        e0 = g0 / n0

        def unit(x):
            return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(tiny)

        e_all = unit(rows)
        relu_all = (e_all @ e0).clamp_min(0)
        g_clean = n0 * (relu_all @ e_all) / relu_all.sum().clamp_min(tiny)      # eq. (7)
        s = torch.sign(g_clean)
        e_h = unit(honest)
        relu_h = (e_h @ e0).clamp_min(0)
        hon_vec, hon_sum = relu_h @ e_h, relu_h.sum()                          # fixed honest terms
        base = float(s @ g_clean)

        c = view.own.shape[0]
        ep = unit(fang_trim(view, 2.0, self.name))                              # Alg. 3, line 2
        ts = (ep @ e0).clamp_min(0)
        mal_vec, mal_sum = ts @ ep, ts.sum()

        def h_with(i, cand):
            """h with e'_i replaced by ``cand`` (eq. (10)), from running sums."""
            t = (cand @ e0).clamp_min(0)
            vec = mal_vec - ts[i] * ep[i] + t * cand + hon_vec
            den = mal_sum - ts[i] + t + hon_sum
            g_att = n0 * vec / den if float(den) > 0 else torch.zeros_like(vec)
            return base - float(s @ g_att)

        sigma = math.sqrt(self.sigma2)
        for _ in range(self.V):
            for i in range(c):
                for _ in range(self.Q):
                    u = torch.randn(ep.shape[1], generator=view.generator, device=view.generator.device,
                                    dtype=torch.float32).to(device, dtype) * sigma
                    grad = (h_with(i, ep[i] + self.gamma * u) - h_with(i, ep[i])) / self.gamma * u
                    new = unit(ep[i] + self.eta * grad)
                    t_new = (new @ e0).clamp_min(0)
                    mal_vec = mal_vec - ts[i] * ep[i] + t_new * new
                    mal_sum = mal_sum - ts[i] + t_new
                    ep[i], ts[i] = new, t_new
        self.last_objective = h_with(0, ep[0]) if c else 0.0
        return n0 * ep
