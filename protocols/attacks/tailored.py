"""Inner-product manipulation (Xie, Koyejo, Gupta 2020) and MixTailor's tailored attack."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from .common import clean_of, honest_of, replay_rule
from .base import Attack, AttackView, register_attack

Tensor = torch.Tensor


def _check_epsilon(attack: str, eps) -> float:
    if not isinstance(eps, (int, float)) or not 0 < eps < float("inf"):
        raise ValueError(f"{attack}: epsilon={eps!r} must be a finite number > 0")
    return float(eps)


@register_attack
@dataclass
class IPM(Attack):
    """Inner-product manipulation (Xie, Koyejo, Gupta 2020, "Fall of empires"): every corrupted
    client sends -epsilon times the mean of the honest updates, so that the inner product of
    the aggregate with the true mean turns negative. epsilon = 0.1 corrupts Krum and
    epsilon = 10 the coordinate median (MixTailor Sec. 5).
    """

    epsilon: float = 0.1
    name = "ipm"
    citation = "Xie et al. 2020 (inner-product manipulation); MixTailor Sec. 5"
    knowledge = "honest-updates"

    def poison_updates(self, view: AttackView):
        eps = _check_epsilon(self.name, self.epsilon)
        mean = honest_of(view, self.name).mean(dim=0)
        return (-eps * mean).expand_as(view.own).clone()


@register_attack
@dataclass
class Tailored(Attack):
    """MixTailor's tailored attack (MixTailor Sec. 2.3 and App. A.1.1, after Fang et al. 2020 and
    Xie et al. 2020): the corrupted clients all send g'_1 = -epsilon * g_bar, g_bar the average of
    the correct updates, "towards the inverse of the direction along which the global model
    would change without attacks".

    With ``epsilon`` set, that vector (MixTailor's experiments: 0.1 against Krum, 10 against
    comed). With ``epsilon`` None, the suboptimal tailored attack of App. A.1.1 over this family:
    the attacker replays the server's rule (``view.rule``, public) on the known updates, g =
    AGG(clean), and picks epsilon from ``grid`` maximising lambda = -<AGG(attacked), g> / ||g||^2.
    Against MixTailor the attacker knows the pool but not the round's draw: it averages lambda
    over ``pool_samples`` members of the pool drawn with its own generator. Rules that need
    context the attacker lacks (FLTrust's root update) fall back to g_bar and the mean as the
    aggregate (documented assumption). ``last_epsilon`` records the choice.
    """

    epsilon: Optional[float] = None
    grid: Tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
    pool_samples: int = 8
    name = "tailored"
    citation = "MixTailor Sec. 2.3, App. A.1.1; Fang et al. 2020; Xie et al. 2020"
    knowledge = "honest-updates"

    def poison_updates(self, view: AttackView):
        honest = honest_of(view, self.name)
        rows, weights = clean_of(view, self.name)
        gbar = rows.mean(dim=0)
        c = view.own.shape[0]
        if self.epsilon is not None:
            eps = _check_epsilon(self.name, self.epsilon)
        else:
            if not self.grid:
                raise ValueError(f"{self.name}: grid is empty; give candidate epsilons or set epsilon")
            for e in self.grid:
                _check_epsilon(self.name, e)
            aggregators = self._aggregators(view)
            clean_aggs = [agg(rows, weights) for agg in aggregators]       # g = AGG(no attack)
            best, eps = -math.inf, float(self.grid[0])
            for e in self.grid:
                attacked = torch.cat([(-e * gbar).expand(c, -1), honest])
                lam = 0.0
                for agg, g in zip(aggregators, clean_aggs):
                    gg = float(g @ g)
                    lam += -float(agg(attacked, weights) @ g) / gg if gg > 0 else 0.0
                lam /= len(aggregators)
                if lam > best:
                    best, eps = lam, float(e)
        self.last_epsilon = eps
        return (-eps * gbar).expand_as(view.own).clone()

    def _aggregators(self, view: AttackView):
        """Callables (rows, weights) -> aggregate standing for the server's rule."""
        rule = view.rule
        if rule is None or getattr(rule, "needs_server_update", False):
            return [lambda r, w: r.mean(dim=0)]
        if getattr(rule, "name", "") == "mixtailor":
            from ..rules.krum import resolve_bulyan_f
            from ..rules.mixtailor import aggregate_member
            pool = rule.pool()
            k = max(1, int(self.pool_samples))
            picks = torch.randint(len(pool), (k,), generator=view.generator, device=view.generator.device)
            members = [pool[int(i)] for i in picks]

            def make(member):
                return lambda r, w: aggregate_member(member, r, resolve_bulyan_f(rule.f, r.shape[0], rule.name))
            return [make(m) for m in members]
        return [lambda r, w: replay_rule(rule, r, w)]
