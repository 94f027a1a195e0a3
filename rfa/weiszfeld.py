"""The geometric median as an iterative secure aggregate: smoothed Weiszfeld.

Pillutla, Kakade, Harchaoui, "Robust Aggregation for Federated Learning" (IEEE TSP
2022), Algorithm 2 (smoothed Weiszfeld), Definition 1 (iterative secure aggregate,
s-privacy), eq. (6) (the objective g), Proposition 2 (convergence) and
Proposition 3 (privacy bound).

Every quantity that depends on a client's update is computed client-side, from
that client's own row and the server's broadcast, inside
``secagg.ClientUpdates.secure_average``; the server holds only the oracle
outputs and what the oracle reveals (the total weight). ``reveal()`` is never
called.

Fixed-point encoding of the weights
-----------------------------------
Algorithm 2's weight beta_i = alpha_i / max(nu, ||v - w_i||) spans [alpha_i / D,
alpha_i / nu]; the oracle encodes u_i = beta_i / B in [0, 1] for a public bound B
at an absolute resolution (about n / 2^(bits-1) per unit). Each client sends
u_i = (alpha_i / alpha_max) * nu / max(nu, ||v - w_i||), i.e. beta_i scaled by the
public constant nu / alpha_max, so that B = 1 bounds every weight without any
knowledge of the data (policy ``"nu"``; the average is invariant to a common
scale). It hides everything Definition 1 hides, but the typical u_i is
nu / distance (about 1e-6), so the ring must be wide: the relative error of one
step is about ``res * sqrt(n d) * alpha_max / (sqrt(2) nu)`` (``res`` the
oracle's per-coordinate resolution), e.g. 8e-9 on a 64-bit ring but 33 on a
32-bit ring at n=100, d=1e6, nu=1e-6, clip 10 (and 1.0 on 32 bits already at
n=20, d=5000). Policies:

- ``"nu"``: the public bound above; refuses (``ValueError``) when the predicted
  error exceeds ``max_encoding_error``.
- ``"revealed"``: the oracle normalises by the call's largest weight, which the
  server then learns (recorded in the transcript's ``revealed``): accurate on a
  32-bit ring, at the price of one scalar per call (the smallest weighted
  distance to the broadcast v). It presumes the deployment can publish that
  maximum (e.g. a secure max); the simulation records it as revealed.
- a float: the caller's public bound on beta_i (normalised alphas).
- ``"auto"`` (default): ``"nu"`` when the ring is wide enough (always for the
  plaintext oracle; a 64-bit ring at any practical n, d), else ``"revealed"``.
  The choice is in :attr:`RFAResult.weight_bound`.
- ``"dp"``: for updates clipped to L2 norm ``clip`` = C (user-level DP), the
  per-call public bound B_r = alpha_max / max(nu, ||v|| - C): since
  ||v - w_i|| >= ||v|| - ||w_i|| >= ||v|| - C, every beta_i <= B_r, and the server
  knows ||v|| (its own broadcast). Each client sends
  u_i = (alpha_i / alpha_max) max(nu, ||v|| - C) / max(nu, ||v - w_i||) <= 1, so the
  noise of a DP oracle, calibrated to u_i <= 1, stays proportionate to the signal
  even when a noisy iterate v lies far from every update (with ``"nu"`` every u_i
  would then be ~ nu / ||v||). This is ``dp.public_weight_bound`` (formula and
  proof in ``dp/rfa_sensitivity.py``), computed inline here because ``rfa``
  imports only ``secagg``. With equal alphas the weights are also bounded below
  by nu / (2 C + nu) (``dp.rfa_weight_floor``). ``clip`` comes from the argument
  or from ``updates.context["dp_clip"]``; the clip must actually hold (the DP
  oracles refuse unclipped rows). A float-rounding excess of u_i over 1 (a row
  clipped to C(1 + 1e-7)) is clamped to the bound client-side.

alpha_max (the largest normalised client weight) is treated as public: it fixes
the public bounds of the v0, objective and ``"nu"`` calls.

The objective g(v) (eq. 6) is obtained through the oracle as well, in its own
call: weights alpha_i, each client sending the 1-vector ||v - w_i|| / s for a
public s derived from the oracle's clip bound; g = (total weight) * s * average.
Those calls are counted and recorded like every other.

Per-client alphas
-----------------
alpha_i is client-held (default: the client's sample count), and beta_i combines
it with the client's own distance: unequal alphas travel as
``secure_average(client_data=alpha / alpha_max)``, so each client's function sees
its own alpha_i only (``fn(row, broadcast, own_alpha)``). Equal alphas cancel and
need no client data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

import torch

import secagg

Tensor = torch.Tensor
WeightBound = Union[str, float]

_POLICIES = ("auto", "nu", "revealed", "dp")
# Coordinates per chunk of the client-side distance on the CPU: the vmapped
# [n, chunk] temporaries stay in cache, so the updates are read once.
_CPU_CHUNK = 1 << 12


# --------------------------------------------------------------------------- results


@dataclass
class RFAGroundTruth:
    """Audit-only quantities of one run. NOT server-visible.

    They come from the transcript's ground truth (the oracle's effective weights),
    which only a simulation has; decisions of the algorithm never use them.
    """

    effective_weights: List[Tensor]
    """beta_i^(r) / sum_j beta_j^(r) for each Weiszfeld call r (0 for a dropped client)."""
    max_effective_weight: float
    """max over i, r of the above: the s of Definition 1 (iv) this run achieved."""
    nu_bar: float
    """min over calls r and clients i of max(nu, ||v^(r) - w_i||) (Propositions 2, 3)."""
    max_distance: float
    """max over calls r and clients i of max(nu, ||v^(r) - w_i||) (at most the diameter B)."""
    privacy_bound: float
    """Proposition 3's bound, evaluated per call with that call's nu_bar and max distance
    in place of the global nu_bar and the diameter B (so never above the paper's bound);
    for unequal alphas its generalisation a B / (a B + (A - a) nu_bar), a = max alpha,
    A = sum of alphas, which is B / (B + (m - 1) nu_bar) when alpha_i = 1/m."""
    alpha_max: float
    """Largest normalised alpha (1/m when all are equal)."""


@dataclass
class RFAResult:
    """Outcome of :func:`smoothed_weiszfeld` / :func:`rfa.one_step`.

    Server-visible: ``aggregate``, ``iterates``, ``objective``, ``oracle_calls``,
    ``stop_reason``, ``encoding_error``. Audit-only: ``ground_truth``.
    """

    aggregate: Tensor
    """v^(R), the approximate geometric median [d]."""
    oracle_calls: int
    """Every secure-average call this run made (v0 mean + Weiszfeld + objective)."""
    weiszfeld_calls: int
    """Weiszfeld iterations run (R <= max_calls)."""
    objective: List[float]
    """g(v^(r)) = sum_i alpha_i ||v^(r) - w_i|| (normalised alphas) for r = 0..R, as the
    server obtained it through the oracle; empty when objective tracking is off."""
    iterates: List[Tensor]
    """v^(0), ..., v^(R): each was broadcast, so the server holds them."""
    stop_reason: str
    """"max_calls" (the budget R was spent) or "tol" (objective improvement below tol)."""
    weight_bound: str
    """Encoding policy used for the Weiszfeld weights: "nu", "dp", "revealed" or "public"."""
    encoding_error: List[float]
    """Server-side estimate (from the revealed total weight) of the norm of the
    quantization error in each Weiszfeld output; 0 for an exact oracle."""
    nu: float
    ground_truth: RFAGroundTruth
    labels: List[str] = field(default_factory=list)
    """Transcript labels of this run's calls, in order."""

    @property
    def max_effective_weight(self) -> float:
        """Ground truth: the largest effective weight (Definition 1 (iv))."""
        return self.ground_truth.max_effective_weight

    @property
    def privacy_bound(self) -> float:
        """Ground truth: Proposition 3's bound as evaluated on this run."""
        return self.ground_truth.privacy_bound

    def prop3_bound(self, diameter: float, nu_bar: Optional[float] = None) -> float:
        """Proposition 3 as stated: B / (B + (m - 1) nu_bar) with B = max_ij ||w_i - w_j||.

        ``diameter`` is ground truth the caller supplies; ``nu_bar`` defaults to the run's
        (reconstructed from the oracle's effective weights and revealed totals). For
        unequal alphas the generalisation a B / (a B + (1 - a) nu_bar), a = max alpha.
        """
        a = self.ground_truth.alpha_max
        nb = self.ground_truth.nu_bar if nu_bar is None else float(nu_bar)
        return a * diameter / (a * diameter + (1.0 - a) * nb)

    def prop2_bound(self, v_star: Tensor, nu_bar: Optional[float] = None) -> float:
        """Proposition 2: g(v^(R)) - g(v*) <= 2 ||v^(0) - v*||^2 / (nu_bar R) + nu / 2.

        ``v_star`` (the exact geometric median) is ground truth the caller supplies,
        e.g. from :func:`geometric_median_reference`. Alphas are normalised (sum 1).
        """
        nb = self.ground_truth.nu_bar if nu_bar is None else float(nu_bar)
        v0 = self.iterates[0].to(torch.float64)
        dist2 = float((v0 - v_star.to(v0.device, torch.float64)).square().sum())
        return 2.0 * dist2 / (nb * max(1, self.weiszfeld_calls)) + self.nu / 2.0

    def server_view(self) -> Dict[str, Any]:
        """What the server holds from this run (no ground truth)."""
        return {"aggregate": self.aggregate, "iterates": self.iterates, "objective": self.objective,
                "oracle_calls": self.oracle_calls, "stop_reason": self.stop_reason,
                "weight_bound": self.weight_bound, "encoding_error": self.encoding_error}

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready summary (no tensors); ground truth under its own key."""
        gt = self.ground_truth
        return {
            "oracle_calls": self.oracle_calls, "weiszfeld_calls": self.weiszfeld_calls,
            "objective": list(self.objective), "stop_reason": self.stop_reason,
            "weight_bound": self.weight_bound, "encoding_error": list(self.encoding_error),
            "nu": self.nu,
            "ground_truth": {"max_effective_weight": gt.max_effective_weight, "nu_bar": gt.nu_bar,
                             "max_distance": gt.max_distance, "privacy_bound": gt.privacy_bound},
        }


# --------------------------------------------------------------------------- client side


def _distance(row: Tensor, v: Tensor) -> Tensor:
    """||row - v||, computed by the client from its own row (runs under vmap).

    On the CPU the coordinates go in cache-sized chunks: vmapped over n clients a
    plain ``row - v`` would write an [n, d] temporary and read it back.
    """
    d = row.shape[-1]
    if row.device.type != "cpu" or d <= 4 * _CPU_CHUNK:
        return torch.linalg.vector_norm(row - v)
    acc = None
    for s in range(0, d, _CPU_CHUNK):
        part = (row[s:s + _CPU_CHUNK] - v[s:s + _CPU_CHUNK]).square().sum()
        acc = part if acc is None else acc + part
    return acc.sqrt()


# --------------------------------------------------------------------------- validation


def _check_nu(nu) -> float:
    if isinstance(nu, bool) or not isinstance(nu, (int, float)) or not math.isfinite(nu) or nu <= 0:
        raise ValueError(f"nu={nu!r} must be a finite number > 0: it is the smoothing of Algorithm 2 "
                         "(beta_i = alpha_i / max(nu, ||v - w_i||)); the paper uses nu=1e-6")
    return float(nu)


def _check_calls(max_calls) -> int:
    if isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 1:
        raise ValueError(f"max_calls={max_calls!r} must be an integer >= 1: it is the budget R of "
                         "Weiszfeld oracle calls of Algorithm 2 (the paper uses 3; one-step RFA uses 1)")
    return max_calls


def _prepare_alphas(updates, alphas) -> Tensor:
    """Normalised alphas [n] (sum 1) on the updates' device; validated."""
    n = updates.n
    if alphas is None:
        a, name = updates.num_samples, "num_samples"
    else:
        a, name = alphas, "alphas"
    try:
        a = torch.as_tensor(a, device=updates.device).to(torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be a tensor of one weight per client (shape [{n}]): {e}") from None
    if a.shape != (n,):
        raise ValueError(f"{name} must have shape [{n}] (one weight alpha_i per client), got {tuple(a.shape)}")
    bad = (~torch.isfinite(a)).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        raise ValueError(f"{name}[{i}] = {float(a[i])!r} is not finite; every client weight alpha_i must be "
                         "a finite number >= 0 (the paper uses alpha_i = N_i / N, the client's share of samples)")
    neg = (a < 0).nonzero().flatten()
    if neg.numel():
        i = int(neg[0])
        raise ValueError(f"{name}[{i}] = {float(a[i])!r} is negative; every client weight alpha_i must be "
                         ">= 0 (the paper uses alpha_i = N_i / N, the client's share of samples)")
    total = float(a.sum())
    if not total > 0:
        raise ValueError(f"{name} are all zero; give at least one client a positive weight alpha_i")
    return (a / total).to(updates.dtype)


def _check_policy(weight_bound) -> WeightBound:
    if isinstance(weight_bound, str):
        if weight_bound not in _POLICIES:
            raise ValueError(f"weight_bound={weight_bound!r}; choose one of {_POLICIES} or a public "
                             "float bound on beta_i = alpha_i / max(nu, ||v - w_i||)")
        return weight_bound
    if isinstance(weight_bound, bool) or not isinstance(weight_bound, (int, float)) \
            or not math.isfinite(weight_bound) or weight_bound <= 0:
        raise ValueError(f"weight_bound={weight_bound!r} must be one of {_POLICIES} or a finite "
                         "float > 0 (a public bound on beta_i = alpha_i / max(nu, ||v - w_i||))")
    return float(weight_bound)


# --------------------------------------------------------------------------- encoding


def _resolution(updates) -> Optional[float]:
    """Per-coordinate resolution of the oracle's encoding of the vectors (None: exact)."""
    make = getattr(updates.oracle, "encoder", None)
    if make is None:
        return None
    enc = make(updates.n, 1, updates.device)
    return float(enc.resolution.reshape(-1)[0])


def predicted_encoding_error(n: int, d: int, nu: float, alpha_max: float, resolution: Optional[float]) -> float:
    """Predicted relative error of one Weiszfeld step under the ``"nu"`` policy.

    With u_i = (alpha_i / alpha_max) nu / max(nu, dist_i), sum_i u_i is about
    nu / (alpha_max * typical distance); stochastic rounding adds at most res/2 per
    client and coordinate to the numerator and denominator, so the step's error
    norm relative to the typical distance is about res sqrt(n d) alpha_max / (sqrt(2) nu),
    independent of the data's scale.
    """
    if resolution is None:
        return 0.0
    return resolution * math.sqrt(n * d) * alpha_max / (math.sqrt(2.0) * nu)


def _resolve_policy(policy: WeightBound, updates, nu: float, alpha_max: float,
                    max_encoding_error: float) -> str:
    if not isinstance(policy, str):
        return "public"
    if policy == "dp":
        return "dp"
    res = _resolution(updates)
    err = predicted_encoding_error(updates.n, updates.d, nu, alpha_max, res)
    if policy == "auto":
        return "nu" if err <= max_encoding_error else "revealed"
    if policy == "nu" and err > max_encoding_error:
        bits = getattr(updates.oracle, "bits", None)
        wide = err * 2.0 ** (bits - 64) if bits else float("nan")
        raise ValueError(
            f"weight_bound='nu' encodes each weight as (alpha_i/alpha_max) * nu / max(nu, ||v - w_i||) <= 1 "
            f"on the oracle's ring (bits={bits}, resolution {res:.3g} at n={updates.n}); with nu={nu:g} "
            f"and d={updates.d} the predicted relative error of each Weiszfeld step is {err:.3g} > "
            f"max_encoding_error={max_encoding_error:g}. Use a 64-bit ring (e.g. QuantizedOracle(bits=64), "
            f"`--bits 64`; predicted {wide:.1g}), a larger nu (>= {nu * err / max_encoding_error:.3g}), or "
            "weight_bound='revealed' (accurate on 32 bits; the server learns each call's largest weight)")
    return policy


# --------------------------------------------------------------------------- the algorithm


class _Run:
    """Bookkeeping of one run: labels, counts and the transcript entries it made."""

    def __init__(self, updates, label: str):
        self.updates = updates
        self.label = label
        self.start_calls = updates.oracle_calls
        self.start_transcript = len(updates.transcript)
        self.labels: List[str] = []

    def call(self, tag: str, **kw) -> Tensor:
        label = f"{self.label}:{tag}"
        before = len(self.updates.transcript)
        out = self.updates.secure_average(label=label, **kw)
        if len(self.updates.transcript) != before + 1:
            raise RuntimeError(f"oracle call {label!r} did not append exactly one transcript entry")
        self.labels.append(label)
        return out

    @property
    def last(self):
        return self.updates.transcript.calls[-1]

    @property
    def calls(self) -> int:
        return self.updates.oracle_calls - self.start_calls


def _objective(run: _Run, v: Tensor, alphas: Tensor, alpha_max: float, tag: str) -> float:
    """g(v) = sum_i alpha_i ||v - w_i|| through one oracle call (eq. 6).

    Each client sends the 1-vector ||v - w_i|| / s, weighted by its alpha_i; s is
    public: ||v|| + clip sqrt(d) bounds every distance when |w_ij| <= clip (the
    oracle's encoding bound), so dist / s fits the per-coordinate clip.
    """
    updates = run.updates
    clip = getattr(updates.oracle, "clip", None)
    s = 1.0 if clip is None else (float(torch.linalg.vector_norm(v.double())) + clip * math.sqrt(updates.d)) / clip
    out = run.call(tag, weight=alphas, transform=lambda row, b: (_distance(row, b) / s).reshape(1),
                   broadcast=v, weight_bound=alpha_max)
    total_alpha = float(run.last.revealed["total_weight"])
    return float(out[0]) * s * total_alpha


def smoothed_weiszfeld(updates: "secagg.ClientUpdates", alphas: Optional[Tensor] = None, *,
                       nu: float = 1e-6, max_calls: int = 3, v0: Optional[Tensor] = None,
                       tol: Optional[float] = None, track_objective: bool = True,
                       weight_bound: WeightBound = "auto", max_encoding_error: float = 1e-6,
                       label: str = "rfa", clip: Optional[float] = None) -> RFAResult:
    """Approximate geometric median of the clients' updates by the smoothed Weiszfeld algorithm.

    Pillutla, Kakade, Harchaoui 2022, Algorithm 2, as an iterative secure aggregate
    (Definition 1): for r = 0..R-1 the server broadcasts v^(r), client i computes
    beta_i = alpha_i / max(nu, ||v^(r) - w_i||) from its own update, and one secure
    average returns v^(r+1) = sum_i beta_i w_i / sum_i beta_i. See the module
    docstring for how the weights are encoded.

    Parameters
    ----------
    updates : secagg.ClientUpdates
        The clients' updates w_i (never revealed).
    alphas : Tensor [n], optional
        Client weights alpha_i >= 0 (client-held); default ``updates.num_samples``.
        Normalised to sum 1 (the paper's convention, Sec. IV).
    nu : float
        Smoothing nu > 0 (paper: 1e-6).
    max_calls : int
        Budget R of Weiszfeld oracle calls (paper: 3).
    v0 : Tensor [d], optional
        Initial iterate (public). Default: the alpha-weighted mean, one more oracle call.
        Proposition 2 assumes v0 in the convex hull of the w_i.
    tol : float, optional
        Stop early when g(v^(r)) - g(v^(r+1)) < tol * g(v^(r+1)) (needs track_objective).
    track_objective : bool
        Obtain g(v^(r)) for r = 0..R through the oracle (R + 1 extra, 1-coordinate calls).
    weight_bound : "auto", "nu", "revealed", "dp" or float
        Encoding of the Weiszfeld weights (module docstring).
    max_encoding_error : float
        Largest predicted relative step error the ``"nu"`` policy accepts.
    label : str
        Prefix of this run's transcript labels (``rfa:v0``, ``rfa:w1``, ``rfa:g0``, ...).
    clip : float, optional
        L2 bound C of every update, for ``weight_bound="dp"`` (default:
        ``updates.context["dp_clip"]``).

    Returns
    -------
    RFAResult
        Oracle calls = [1 if v0 is None] + R + [R + 1 if track_objective].
    """
    nu = _check_nu(nu)
    max_calls = _check_calls(max_calls)
    policy = _check_policy(weight_bound)
    if not hasattr(updates, "secure_average"):
        raise TypeError(f"updates must be a secagg.ClientUpdates handle, got {type(updates).__name__}; "
                        "wrap the [n, d] matrix as secagg.ClientUpdates(matrix, oracle=..., secure=...)")
    if tol is not None:
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
            raise ValueError(f"tol={tol!r} must be a finite number >= 0 (relative objective improvement) or None")
        if not track_objective:
            raise ValueError("tol needs the objective: pass track_objective=True, or tol=None to run "
                             "exactly max_calls Weiszfeld calls")
    if not (isinstance(max_encoding_error, (int, float)) and max_encoding_error > 0):
        raise ValueError(f"max_encoding_error={max_encoding_error!r} must be a number > 0")
    alphas = _prepare_alphas(updates, alphas)
    alpha_max = float(alphas.max())
    equal = bool((alphas == alphas[0]).all())
    mode = _resolve_policy(policy, updates, nu, alpha_max, max_encoding_error)
    if mode == "dp":
        clip = clip if clip is not None else getattr(updates, "context", {}).get("dp_clip")
        if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not math.isfinite(clip) or clip <= 0:
            raise ValueError(f"weight_bound='dp' needs the L2 clip C > 0 of the updates (clip={clip!r}); pass "
                             "clip=C or run under user-level DP, which sets updates.context['dp_clip']")
        clip = float(clip)
    res = _resolution(updates)
    if v0 is not None:
        v0 = torch.as_tensor(v0)
        if v0.shape != (updates.d,):
            raise ValueError(f"v0 must have shape [{updates.d}] (one model-sized vector), got {tuple(v0.shape)}")
        if not torch.isfinite(v0).all():
            raise ValueError("v0 has non-finite entries; pass a finite initial iterate or None (weighted mean)")
        v0 = v0.to(device=updates.device, dtype=updates.dtype)

    run = _Run(updates, label)
    if v0 is None:
        v = run.call("v0", weight=alphas, weight_bound=alpha_max)
    else:
        v = v0
    iterates = [v]
    objective: List[float] = []
    if track_objective:
        objective.append(_objective(run, v, alphas, alpha_max, "g0"))

    # Weights scaled by the public nu / alpha_max: every u_i <= 1 (module docstring).
    scale = nu / alpha_max
    if equal:
        weight_fn = lambda row, b: nu / torch.clamp(_distance(row, b), min=nu)  # noqa: E731
        extra: Dict[str, Any] = {}
    else:
        weight_fn = lambda row, b, a: a * (nu / torch.clamp(_distance(row, b), min=nu))  # noqa: E731
        extra = {"client_data": alphas / alpha_max}
    bound = {"nu": 1.0, "dp": 1.0, "revealed": None,
             "public": (policy if mode == "public" else 0.0) * scale}[mode]

    eff_weights: List[Tensor] = []
    enc_err: List[float] = []
    nu_bars: List[float] = []
    dmaxes: List[float] = []
    bounds: List[float] = []
    stop = "max_calls"
    r = 0
    for r in range(1, max_calls + 1):
        call_scale, call_fn = scale, weight_fn
        if mode == "dp":
            # B_r = alpha_max / max(nu, ||v|| - C) (dp.public_weight_bound): u_i = beta_i / B_r <= 1.
            m_r = max(nu, float(torch.linalg.vector_norm(v.double())) - clip)
            call_scale = m_r / alpha_max
            if equal:
                call_fn = lambda row, b, m=m_r: torch.clamp(  # noqa: E731
                    m / torch.clamp(_distance(row, b), min=nu), max=1.0)
            else:
                call_fn = lambda row, b, a, m=m_r: a * torch.clamp(  # noqa: E731
                    m / torch.clamp(_distance(row, b), min=nu), max=1.0)
        v = run.call(f"w{r}", weight=call_fn, broadcast=v, weight_bound=bound, **extra)
        iterates.append(v)
        call = run.last
        total_u = float(call.revealed["total_weight"])      # sum of the scaled weights, server-visible
        wb = float(call.revealed.get("weight_bound", bound if bound is not None else 1.0))
        enc_err.append(0.0 if res is None else
                       res * math.sqrt(updates.n * updates.d) / (math.sqrt(2.0) * (total_u / wb)))
        # Ground truth (audit only): effective weights, and Proposition 3 per call.
        eff = call.ground_truth["effective_weights"].detach()
        eff_weights.append(eff)
        nb, dm, pb = _privacy_stats(eff, alphas, call.survivors, total_u / call_scale)
        nu_bars.append(nb)
        dmaxes.append(dm)
        bounds.append(pb)
        if track_objective:
            objective.append(_objective(run, v, alphas, alpha_max, f"g{r}"))
            if tol is not None and objective[-2] - objective[-1] < tol * abs(objective[-1]):
                stop = "tol"
                break

    gt = RFAGroundTruth(
        effective_weights=eff_weights,
        max_effective_weight=max(float(e.max()) for e in eff_weights),
        nu_bar=min(nu_bars), max_distance=max(dmaxes), privacy_bound=max(bounds), alpha_max=alpha_max)
    n_transcript = len(updates.transcript) - run.start_transcript
    if n_transcript != run.calls:
        raise RuntimeError(f"{run.calls} oracle calls but {n_transcript} transcript entries")
    return RFAResult(aggregate=v, oracle_calls=run.calls, weiszfeld_calls=r, objective=objective,
                     iterates=iterates, stop_reason=stop, weight_bound=mode, encoding_error=enc_err,
                     nu=nu, ground_truth=gt, labels=run.labels)


def _privacy_stats(eff: Tensor, alphas: Tensor, survivors: List[int], sum_beta: float):
    """(nu_bar, max distance, Proposition 3 bound) of one call, from ground truth.

    eff_i = beta_i / sum beta with beta_i = alpha_i / max(nu, d_i), hence
    max(nu, d_i) = alpha_i / (eff_i sum beta); sum beta is the revealed total.
    """
    surv = torch.as_tensor(survivors, device=eff.device, dtype=torch.long)
    e = eff[surv].to(torch.float64)
    a = alphas[surv].to(torch.float64)
    pos = (e > 0) & (a > 0)
    e, a = e[pos], a[pos]
    dist = a / e                                  # proportional to max(nu, d_i)
    ratio = float(dist.max() / dist.min())        # exact: sum beta cancels
    a_max, a_sum = float(a.max()), float(a.sum())
    bound = a_max * ratio / (a_max * ratio + a_sum - a_max) if a_sum > a_max else 1.0
    return float(dist.min()) / sum_beta, float(dist.max()) / sum_beta, bound


# --------------------------------------------------------------------------- reference


@dataclass
class GMReference:
    """A float64 geometric median run to convergence (tests, benchmarks)."""

    median: Tensor
    objective: float
    iterations: int
    converged: bool


def geometric_median_reference(points: Tensor, alphas: Optional[Tensor] = None, *, tol: float = 1e-12,
                               max_iter: int = 100_000) -> GMReference:
    """Plain float64 Weiszfeld on the [n, d] matrix, run to convergence (no oracle).

    Weiszfeld 1937; the smoothing nu is 1e-12 times the mean distance (RFA paper,
    Algorithm 2 with a negligible nu), so a median at a data point does not
    divide by zero. Stops when the step is below ``tol`` times the mean distance.
    Objective with normalised alphas, as in :class:`RFAResult`.
    """
    x = points.detach().to(torch.float64)
    if x.ndim != 2:
        raise ValueError(f"points must be an [n, d] matrix, got shape {tuple(x.shape)}")
    n = x.shape[0]
    a = torch.full((n,), 1.0 / n, dtype=torch.float64, device=x.device) if alphas is None \
        else torch.as_tensor(alphas, device=x.device).to(torch.float64)
    if a.shape != (n,) or not torch.isfinite(a).all() or (a < 0).any() or not a.sum() > 0:
        raise ValueError(f"alphas must be {n} finite weights >= 0 with a positive sum")
    a = a / a.sum()
    v = a @ x
    dist = torch.linalg.vector_norm(x - v, dim=1)
    scale = float(a @ dist) or 1.0
    eps = 1e-12 * scale
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        beta = a / dist.clamp(min=eps)
        v_new = (beta @ x) / beta.sum()
        step = float(torch.linalg.vector_norm(v_new - v))
        v = v_new
        dist = torch.linalg.vector_norm(x - v, dim=1)
        if step <= tol * scale:
            converged = True
            break
    return GMReference(median=v, objective=float(a @ dist), iterations=it, converged=converged)
