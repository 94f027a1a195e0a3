"""The availability attacks of the Cronus appendix (Sec. B.2-B.4): PAF, LIE and OFOM."""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from .common import honest_of, n_selected
from .base import Attack, AttackView, register_attack


def _check_magnitude(attack: str, magnitude) -> float:
    if not isinstance(magnitude, (int, float)) or not math.isfinite(magnitude):
        raise ValueError(f"{attack}: magnitude={magnitude!r} must be a finite number")
    return float(magnitude)


@register_attack
@dataclass
class PAF(Attack):
    """Naive poisoning, PAF (Cronus appendix B.2, eq. (8)): every corrupted client sends
    theta_m = mean of the benign updates + theta', with theta' = ``magnitude`` in every
    coordinate (an "arbitrarily large" vector; under secure aggregation the simulation clips
    it to the encoding bound and counts the clipped coordinates).

    Knowledge "honest-updates": eq. (8) averages the (1 - eps) n benign updates themselves.
    """

    magnitude: float = 10.0
    name = "paf"
    citation = "Cronus appendix B.2, eq. 8 (naive poisoning, PAF)"
    knowledge = "honest-updates"

    def poison_updates(self, view: AttackView):
        mag = _check_magnitude(self.name, self.magnitude)
        mu = honest_of(view, self.name).mean(dim=0)
        return (mu + mag).expand_as(view.own).clone()


def lie_z(n: int, f: int) -> float:
    """z of LIE (Cronus appendix Alg. 5, lines 2-3): s = floor(n/2 + 1) - f workers are needed for
    a majority; z = max z with Phi(z) < ((n - f) - s) / (n - f)."""
    s = math.floor(n / 2 + 1) - f
    q = ((n - f) - s) / (n - f)
    if not 0 < q < 1:
        raise ValueError(f"lie: with n={n} clients of which f={f} corrupted, s = floor(n/2 + 1) - f = {s} "
                         f"gives Phi(z) < {q:.3g}, which has no finite z; LIE needs 1 <= f < floor(n/2 + 1) "
                         "and n >= 3")
    return NormalDist().inv_cdf(q)


@register_attack
@dataclass
class LIE(Attack):
    """"A little is enough" (Baruch, Baruch, Goldberg 2019; Cronus appendix Alg. 5): every
    corrupted client sends theta_m^j = mu_j + z sigma_j, with s = floor(n/2 + 1) - f and
    z = max z with Phi(z) < ((1 - eps) n - s) / ((1 - eps) n), where n is the number of clients
    aggregated this round and f = eps n the corrupted ones among them.

    Knowledge "own": mu and sigma (per coordinate; sigma the sample standard deviation) are
    estimated from the corrupted clients' own honestly trained updates, as Baruch et al.'s
    attacker (and the Cronus appendix's, "she possesses data drawn from the distribution same as
    that of benign parties") does. Needs at least 2 corrupted clients in the round.
    ``last_z`` records the z used.
    """

    name = "lie"
    citation = "Baruch et al. 2019 (LIE); Cronus appendix Alg. 5"
    knowledge = "own"

    def poison_updates(self, view: AttackView):
        c = view.own.shape[0]
        if c < 2:
            raise ValueError(f"lie estimates the per-coordinate sigma from the corrupted clients' own updates "
                             f"and needs at least 2 of them in a round; got {c} (raise --corrupt or sample "
                             "more clients per round)")
        z = lie_z(n_selected(view), c)
        self.last_z = z
        mu, sigma = view.own.mean(dim=0), view.own.std(dim=0)
        return (mu + z * sigma).expand_as(view.own).clone()


@register_attack
@dataclass
class OFOM(Attack):
    """OFOM, the Cronus attack on MWU aggregation (Cronus appendix B.4, eq. (9)):
    theta_1 = mean of the benign updates + theta' (theta' = ``magnitude`` in every coordinate),
    theta_2 = (sum of the benign updates + theta_1) / ((1 - eps) n + 1). The first corrupted
    client sends theta_1, all others theta_2; it needs at least 2 corrupted clients.

    Knowledge "honest-updates": eq. (9) sums the benign updates themselves.
    """

    magnitude: float = 10.0
    name = "ofom"
    citation = "Cronus appendix B.4, eq. 9 (OFOM)"
    knowledge = "honest-updates"

    def poison_updates(self, view: AttackView):
        mag = _check_magnitude(self.name, self.magnitude)
        c = view.own.shape[0]
        if c < 2:
            raise ValueError(f"ofom sends two different malicious updates and needs at least 2 corrupted "
                             f"clients in a round; got {c}")
        honest = honest_of(view, self.name)
        theta1 = honest.mean(dim=0) + mag
        theta2 = (honest.sum(dim=0) + theta1) / (honest.shape[0] + 1)
        out = theta2.expand_as(view.own).clone()
        out[0] = theta1
        return out
