"""The reference-model attacks as :class:`MembershipAttack` s: LiRA (Carlini et al., S&P 2022)
and RMIA (Zarifzadeh et al., ICML 2024), bound to a :class:`membership.reference.ReferenceGame`.

A record is a pooled index ``p = r * N + i`` (candidate record i with run r as the target);
:func:`membership.attack_server_view` builds the game from a server view's reference runs and
binds the attack, so that :func:`membership.run_attack` (split, fit, score, metrics) runs them
like any other attack. The score functions themselves are in :mod:`membership.reference`.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..reference import ReferenceGame, check_rmia_args
from ..views import Records
from .base import MembershipAttack

Tensor = torch.Tensor

__all__ = ["LiRA", "RMIA"]


class _GameAttack(MembershipAttack):
    """A reference-model attack scoring pooled record indices ``p = r * N + i`` of a bound game."""

    requires_references = True

    def __init__(self):
        super().__init__()
        self.game: Optional[ReferenceGame] = None

    def bind(self, game: ReferenceGame) -> "_GameAttack":
        self.game = game
        return self

    def _game(self) -> ReferenceGame:
        if self.game is None:
            raise RuntimeError(f"{type(self).__name__} needs reference models: attack a membership.ServerView that "
                               "has reference runs with membership.attack_server_view (fedaudit audit "
                               "--reference-models K), or call membership.lira_scores / rmia_scores directly")
        return self.game

    def _lookup(self, table: Tensor, records: Records) -> Tensor:
        p = records.x.long().cpu()
        N = self._game().n_records
        return table[p // N, p % N]


class LiRA(_GameAttack):
    """Carlini et al. (S&P 2022) likelihood-ratio attack: ``online`` (IN and OUT reference models)
    or offline; ``fix_variance`` (None: global variance below 64 reference models)."""

    name = "lira"

    def __init__(self, online: bool = True, fix_variance: Optional[bool] = None):
        super().__init__()
        if not isinstance(online, bool):
            raise ValueError(f"online={online!r} must be True or False")
        if fix_variance is not None and not isinstance(fix_variance, bool):
            raise ValueError(f"fix_variance={fix_variance!r} must be True, False or None (automatic)")
        self.online, self.fix_variance = online, fix_variance

    def _score(self, views, records):
        return self._lookup(self._game().lira(self.online, self.fix_variance), records)


class RMIA(_GameAttack):
    """Zarifzadeh et al. (ICML 2024) relative membership inference: pairwise likelihood ratios
    against population records (the attacker's known non-members of the target run); ``gamma``
    (Eq. 4's threshold on LR(x)/LR(z)) and ``offline_a`` (None: online)."""

    name = "rmia"
    requires_fit = True

    def __init__(self, gamma: float = 1.0, offline_a: Optional[float] = None):
        super().__init__()
        check_rmia_args(gamma, offline_a)
        self.gamma, self.offline_a = gamma, offline_a
        self._scores: Optional[Tensor] = None

    def _fit(self, views, members, nonmembers):
        game = self._game()
        p = nonmembers.x.long().cpu()
        N = game.n_records
        runs, recs = p // N, p % N
        population = [recs[runs == r] for r in range(game.n_runs)]
        self._scores = game.rmia(population, self.gamma, self.offline_a)
        super()._fit(views, members, nonmembers)

    def _score(self, views, records):
        if self._scores is None:
            raise RuntimeError("RMIA must be fitted (its population z are the known non-members) before scoring")
        return self._lookup(self._scores, records)

