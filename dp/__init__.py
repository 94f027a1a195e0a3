"""dp: differential privacy for federated learning, accounted with Opacus.
May import secagg (the oracles it wraps) and Opacus; never rfa, membership or protocols.

- :mod:`dp.accounting`: epsilon and noise-for-epsilon through Opacus's PRV (default)
  and RDP accountants (Gopi et al. 2021; Mironov 2017; Abadi et al. 2016), the Zhu-Wang
  2019 subsampled RDP bound for the discrete mechanisms, composition of the releases of a
  round (:class:`PrivacyAccountant`), input checks.
- :mod:`dp.noise`: where DP randomness comes from: the OS CSPRNG (:class:`SecureRandom`),
  seeded streams keyed by (seed, round, call) only on request.
- :mod:`dp.grid`: the discrete Gaussian on a fine grid for float sums (no floating-point
  leak; accounted as the Gaussian).
- :mod:`dp.record_level`: DP-SGD local training per client via Opacus's
  ``PrivacyEngine`` (Abadi et al. 2016), one persistent accountant per client.
- :mod:`dp.user_level`: user-level DP-FedAvg with central noise (McMahan et al. 2018),
  clipping, Poisson cohorts, and :class:`CentralDPOracle`.
- :mod:`dp.discrete_gaussian`: exact discrete Gaussian sampler (Canonne, Kamath,
  Steinke 2020).
- :mod:`dp.distributed`: distributed discrete Gaussian under secure aggregation
  (Kairouz, Liu, Steinke 2021), :class:`DistributedDPOracle`, achieved epsilon under
  dropouts.
- :mod:`dp.rfa_sensitivity`: sensitivity of a smoothed-Weiszfeld call (RFA,
  Pillutla, Kakade, Harchaoui 2022) and accounting of R calls per round.

Imports only ``secagg`` (and Opacus).
"""
from .accounting import (ACCOUNTANTS, DEFAULT_ACCOUNTANT, MECHANISMS, PrivacyAccountant, check_clip, check_delta,
                         check_noise_multiplier, check_sample_rate, compose_noise_multipliers, discrete_epsilon,
                         epsilon, noise_for_epsilon, split_noise_multiplier, subsampled_rdp_bound)
from .noise import (CSPRNG_LABEL, SEEDED_LABEL, SecureRandom, bernoulli_cohort, noise_label, noise_rng,
                    os_seeded_torch_generator)
from .grid import GridPlan, grid_plan, grid_release
from .discrete_gaussian import (discrete_gaussian, discrete_gaussian_pmf, discrete_gaussian_variance,
                                discrete_laplace)
from .distributed import (DistributedDPOracle, DistributedPlan, NoisySum, achieved_epsilon,
                          achieved_noise_multiplier, kls_noise_multiplier, kls_tau, noisy_sum, plan)
from .record_level import (RecordLevelClient, RecordLevelClients, record_level_noise_for_epsilon,
                           record_level_sample_rate, steps_per_epoch, train_dp_sgd)
from .rfa_sensitivity import (SumSensitivity, prop3_average_sensitivity, public_weight_bound,
                              rfa_average_sensitivity, rfa_epsilon, rfa_noise_for_epsilon,
                              rfa_round_noise_multiplier, rfa_sum_sensitivity, rfa_weight_floor,
                              weiszfeld_weight_bound)
from .user_level import (DEN_FRACTION, CentralDPOracle, ClipResult, DPFedAvgResult, check_clipped,
                         check_den_fraction, clip_updates, dp_fedavg, poisson_cohort, sensitivity,
                         user_level_epsilon, user_level_noise_for_epsilon)

__all__ = [
    # accounting
    "ACCOUNTANTS", "DEFAULT_ACCOUNTANT", "MECHANISMS", "PrivacyAccountant", "epsilon", "noise_for_epsilon",
    "compose_noise_multipliers", "split_noise_multiplier", "check_clip", "check_delta", "check_noise_multiplier",
    "check_sample_rate", "subsampled_rdp_bound", "discrete_epsilon",
    # noise sources, the grid
    "SecureRandom", "noise_rng", "noise_label", "os_seeded_torch_generator", "bernoulli_cohort", "CSPRNG_LABEL",
    "SEEDED_LABEL", "GridPlan", "grid_plan", "grid_release",
    # user level (central)
    "clip_updates", "ClipResult", "check_clipped", "sensitivity", "dp_fedavg", "DPFedAvgResult",
    "user_level_epsilon", "user_level_noise_for_epsilon", "poisson_cohort", "DEN_FRACTION", "check_den_fraction",
    "CentralDPOracle",
    # discrete Gaussian
    "discrete_gaussian", "discrete_laplace", "discrete_gaussian_variance", "discrete_gaussian_pmf",
    # distributed
    "DistributedDPOracle", "DistributedPlan", "NoisySum", "plan", "noisy_sum", "kls_tau",
    "kls_noise_multiplier", "achieved_noise_multiplier", "achieved_epsilon",
    # DP-RFA
    "SumSensitivity", "rfa_sum_sensitivity", "rfa_average_sensitivity", "prop3_average_sensitivity",
    "weiszfeld_weight_bound", "public_weight_bound", "rfa_weight_floor", "rfa_round_noise_multiplier", "rfa_epsilon", "rfa_noise_for_epsilon",
    # record level
    "RecordLevelClient", "RecordLevelClients", "train_dp_sgd", "record_level_noise_for_epsilon",
    "record_level_sample_rate", "steps_per_epoch",
]
