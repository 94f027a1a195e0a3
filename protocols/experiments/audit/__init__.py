"""Membership audits of the server's real views, with empirical epsilon: ``fedaudit audit`` (docs/audit.md).
May import membership, the simulation and the packages below it, and experiments.options; never the CLI.

Trains a federation (any :class:`~protocols.simulation.RunConfig`: rule, ``secagg``, DP, ...),
then runs membership-inference attacks (:mod:`membership`) against every model the server
really holds in that setting, as in the Cronus appendix B.5 and its Table 6 after Nasr,
Shokri, Houmansadr (S&P 2019):

=========================  =================================================================
view                       what the server observed in the last round (t = rounds - 1)
=========================  =================================================================
``individual``             each target client's model, broadcast + its own update, from the
                           transcript's reveals: only without secure aggregation
``aggregate``              the global model after the last round (the final model)
``weiszfeld-r``            RFA (smoothed Weiszfeld): broadcast + v^(r), one view per oracle
                           call of the last round (r = 0 the weighted mean, 1..R the iterates)
``active-individual``      malicious server: in the last ``active_rounds`` rounds it
                           broadcasts ``theta + gamma * dL_targets/dtheta`` (gradient ascent on
                           all target records, :func:`membership.gradient_ascent`) and observes
                           each target's model after its owner trained on it (only without
                           secure aggregation); a separate continuation of the same run
``active-aggregate``       the same, observing the aggregate: ascended broadcast + aggregate
=========================  =================================================================

Every view is handed to the attacks as the models the server holds for it, in time order and
the observed one last. **Targets**: members are the target clients' training records,
non-members an equal number of test records, each assigned to a target client; the records of
all target clients are pooled (:func:`membership.attack_server_view`). **Reference models**
(``reference_models`` K, :mod:`.reference`): K shadow federations trained like the audited run
with each target record in a random half of them, in lockstep and vectorized (:mod:`.lockstep`);
LiRA and RMIA compare the target with them, and every run is the target in turn, so all attacks
are evaluated on the records of K + 1 runs. **Empirical epsilon**: every row has
``epsilon_lower`` (Clopper-Pearson on the attack's scores, a 95% bound), and canary runs
(:mod:`.canaries`) add the one-run bound and Andrew et al.'s estimate per view, beside the
accountant's epsilon.

Modules: :mod:`.config` (what to audit, the defaults), :mod:`.collect` (training, targets,
views), :mod:`.lockstep`, :mod:`.reference`, :mod:`.canaries`, :mod:`.run` (:func:`run_audit`),
:mod:`.report` (table, audit.json, plots), :mod:`.command` (``fedaudit audit``).
"""
from .config import (ACTIVE_NOTES, AUDIT_RUN_DEFAULTS, CANARY_KINDS, DEFAULT_ATTACKS, DEFAULT_REFERENCE_MODELS,
                     VIEW_KINDS, AuditConfig, audit_run_config)
from .run import AuditRows, Collected, collect, run_audit
from .report import (audit_document, defaults_note, format_table, json_rows, plot_epsilon, plot_roc, setting_title,
                     write_audit)
from .command import add_audit_parser, audit_config_from_args, cmd_audit

__all__ = ["AuditConfig", "AuditRows", "audit_run_config", "run_audit", "collect", "Collected", "plot_roc",
           "plot_epsilon", "write_audit", "audit_document", "format_table", "json_rows", "defaults_note",
           "setting_title", "add_audit_parser", "audit_config_from_args", "cmd_audit", "AUDIT_RUN_DEFAULTS",
           "VIEW_KINDS", "CANARY_KINDS", "DEFAULT_ATTACKS", "DEFAULT_REFERENCE_MODELS", "ACTIVE_NOTES"]
