"""Membership inference: attacks on model views, on a federated server's views, and their metrics.
May import torch, numpy, scipy and scikit-learn only: no other fedaudit package.

Attacks take one or several *views* (an ``nn.Module``, or a module plus a flat
parameter vector in ``model.parameters()`` order) and labelled target records
``(x, y)``, and return scores (higher = member); :mod:`membership.metrics` turns
scores into balanced accuracy, ROC AUC (with a bootstrap CI) and TPR at low FPR,
with scikit-learn.

* White-box attack of Nasr, Shokri, Houmansadr (S&P 2019): :class:`WhiteboxAttack`
  on :func:`record_features` (output vector, loss, one-hot label, last-layer gradient).
* Baselines: :class:`LossThreshold` (Yeom et al. 2018), :class:`ConfidenceThreshold`,
  :class:`GradientNorm` (Cronus appendix B.5, Figure 3).
* Active attack: :func:`gradient_ascent` (theta + gamma * dL/dtheta on the targets),
  scored by :func:`active_scores`, :class:`LossDrop`, :class:`GradientNormDrop`.
* :func:`split_targets` (attacker's prior knowledge) and :func:`run_attack`
  (split, fit, score, metrics) for audits.
* :class:`ServerView`, :class:`TargetSet`, :func:`attack_server_view`: one attack on one
  view a federated server holds, over pooled target clients (both protocols' audits).
* Reference-model attacks (:mod:`membership.reference`): :class:`LiRA` (Carlini et al., S&P
  2022) and :class:`RMIA` (Zarifzadeh et al., ICML 2024) on the reference runs of a server
  view, :func:`lira_scores` / :func:`rmia_scores` on plain arrays.
* Empirical epsilon (:mod:`membership.auditing`): lower bounds from an attack's scores
  (Jagielski et al. 2020, Clopper-Pearson) and from randomly inserted canaries (Steinke et
  al. 2023, one run), and Andrew et al.'s (2024) Gaussian estimate from canary cosines.

This package imports no other fedaudit package.
"""
from .active import active_scores, gradient_ascent
from .attacks import (ATTACKS, RMIA, AttackNetwork, ConfidenceThreshold, GradientNorm, GradientNormDrop, LiRA,
                      LossDrop, LossThreshold, MembershipAttack, WhiteboxAttack, make_attack)
from .auditing import (clopper_pearson, cosines, delta_two_gaussians, epsilon_from_counts,
                       epsilon_lower_from_scores, epsilon_two_gaussians, gaussian_epsilon_estimate, one_run_audit,
                       one_run_epsilon_lower, one_run_p_value, random_unit_directions)
from .evaluate import run_attack
from .features import (Features, find_last_layer, last_layer_gradients, outputs_and_losses, per_sample_grad_norm,
                       record_features)
from .metrics import (LOW_FPRS, MIAResult, auc, auc_confidence_interval, balanced_accuracy, best_threshold,
                      evaluate_scores, labels_for, min_nonmembers_for, roc, tpr_at_fpr, tpr_confidence_interval,
                      tpr_not_estimable)
from .reference import (ReferenceGame, lira_scores, logit_confidence, reference_signals, rmia_scores,
                        true_label_probability)
from .server_views import (PooledScore, PooledWhitebox, ServerView, TargetPool, TargetSet, attack_server_view,
                           pooled_attack, reference_game)
from .split import TargetSplit, split_targets
from .views import ModelView, Records, as_records, as_views, flatten_params, unflatten_params

__all__ = [
    # views and records
    "ModelView", "Records", "as_records", "as_views", "flatten_params", "unflatten_params",
    # features
    "Features", "record_features", "outputs_and_losses", "last_layer_gradients", "per_sample_grad_norm",
    "find_last_layer",
    # attacks
    "ATTACKS", "make_attack", "MembershipAttack", "LossThreshold", "ConfidenceThreshold", "GradientNorm",
    "WhiteboxAttack", "AttackNetwork", "LossDrop", "GradientNormDrop", "LiRA", "RMIA",
    # reference models
    "ReferenceGame", "lira_scores", "rmia_scores", "logit_confidence", "true_label_probability", "reference_signals",
    # empirical epsilon
    "clopper_pearson", "epsilon_from_counts", "epsilon_lower_from_scores", "one_run_p_value", "one_run_epsilon_lower",
    "one_run_audit", "epsilon_two_gaussians", "delta_two_gaussians", "gaussian_epsilon_estimate",
    "random_unit_directions", "cosines",
    # active
    "gradient_ascent", "active_scores",
    # split / evaluation
    "TargetSplit", "split_targets", "run_attack",
    # server views of a federation, pooled targets
    "ServerView", "TargetSet", "TargetPool", "PooledScore", "PooledWhitebox", "pooled_attack", "attack_server_view",
    "reference_game",
    # metrics
    "MIAResult", "evaluate_scores", "roc", "auc", "auc_confidence_interval", "tpr_at_fpr", "balanced_accuracy",
    "best_threshold", "labels_for", "tpr_confidence_interval", "min_nonmembers_for", "tpr_not_estimable", "LOW_FPRS",
]
