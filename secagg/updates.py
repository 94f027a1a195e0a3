"""The handle every aggregation rule receives instead of a matrix of updates.

docs/architecture.md, "The server-view contract"; RFA paper, Sec. III-B, Definition 1
(iterative secure aggregate): in each oracle call every client computes a
scalar weight and, if the rule needs it, a transformed vector from its own
update and the server's broadcast; the oracle returns the weighted average.

Client-side functions are run with ``torch.vmap`` over the clients, so a
function sees exactly one client's row (and the broadcast) by construction: it
cannot look at another client's update even by mistake.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch

from .errors import SecureAggregationViolation
from .oracle import PlaintextOracle, SecureAverageOracle
from .transcript import Transcript

Tensor = torch.Tensor
ClientFn = Callable[[Tensor, Any], Tensor]


class ClientUpdates:
    """Client updates [n, d] as a rule may use them.

    Parameters
    ----------
    updates : Tensor [n, d]
        One flattened update per client (stays on its device).
    oracle : SecureAverageOracle, optional
        The secure-average oracle; default a :class:`PlaintextOracle`.
    secure : bool
        Whether secure aggregation is on. When on, :meth:`reveal` raises.
    rule : str
        Name of the rule using the handle, for error messages.
    num_samples : Tensor [n], optional
        Each client's local sample count (client-held; FedAvg's weights).
    transcript : Transcript, optional
        Where calls are recorded; a fresh one by default.
    """

    def __init__(self, updates: Tensor, *, oracle: Optional[SecureAverageOracle] = None,
                 secure: bool = False, rule: str = "<rule>",
                 num_samples: Optional[Tensor] = None, transcript: Optional[Transcript] = None,
                 context: Optional[dict] = None):
        if updates.ndim != 2:
            raise ValueError(f"updates must be a [n_clients, d] matrix, got shape {tuple(updates.shape)}")
        self._updates = updates
        self.oracle = oracle if oracle is not None else PlaintextOracle()
        self.secure = bool(secure)
        self.rule = rule
        self.transcript = transcript if transcript is not None else Transcript()
        if num_samples is None:
            num_samples = torch.ones(updates.shape[0], device=updates.device)
        num_samples = torch.as_tensor(num_samples, device=updates.device, dtype=updates.dtype)
        if num_samples.shape != (updates.shape[0],):
            raise ValueError(f"num_samples must have shape [{updates.shape[0]}], got {tuple(num_samples.shape)}")
        self.num_samples = num_samples
        # Public side information a rule may use (e.g. the round, a server root update).
        self.context = dict(context or {})
        self.oracle_calls = 0
        # Recorded once: without secure aggregation the server holds the updates as soon as they arrive.
        self.revealed = False

    @property
    def n(self) -> int:
        return self._updates.shape[0]

    @property
    def d(self) -> int:
        return self._updates.shape[1]

    @property
    def device(self) -> torch.device:
        return self._updates.device

    @property
    def dtype(self) -> torch.dtype:
        return self._updates.dtype

    def secure_average(self, weight: Union[ClientFn, Tensor, None] = None,
                       transform: Optional[ClientFn] = None, *, broadcast: Any = None,
                       weight_bound: Optional[float] = None, label: Optional[str] = None,
                       client_data: Optional[Tensor] = None) -> Tensor:
        """One oracle call: sum_i beta_i t_i / sum_i beta_i.

        Parameters
        ----------
        weight : callable(update, broadcast) -> scalar, or Tensor [n], or None
            Each client's weight beta_i. A callable runs client-side on the
            client's own row only (vmapped); a tensor is a client-held scalar
            per client (e.g. ``num_samples``); None means equal weights.
        transform : callable(update, broadcast) -> Tensor [d'], optional
            What each client sends instead of its raw update (client-side).
        broadcast : any
            Server state sent to every client (e.g. the current estimate v).
        weight_bound : float, optional
            Public bound on every beta_i used for encoding (see the oracle).
        label : str, optional
            Name of the call in the transcript.
        client_data : Tensor [n, ...], optional
            Client-held values (e.g. RFA's alpha_i), one slice per client; when given,
            client-side functions are called as ``fn(update, broadcast, own_data)``
            and each client sees only its own slice.
        """
        rows = self._updates
        if client_data is not None:
            client_data = torch.as_tensor(client_data, device=self.device)
            if client_data.shape[:1] != (self.n,):
                raise ValueError(f"client_data must have one entry per client (leading dim {self.n}), "
                                 f"got shape {tuple(client_data.shape)}")

        def run(fn, source):
            if client_data is None:
                return torch.vmap(lambda r: fn(r, broadcast))(source)
            return torch.vmap(lambda r, c: fn(r, broadcast, c))(source, client_data)

        if transform is not None:
            rows = run(transform, rows)
            if rows.ndim != 2 or rows.shape[0] != self.n:
                raise ValueError(f"transform must map each row to a vector; got output shape {tuple(rows.shape)}")
        if weight is None:
            beta = torch.ones(self.n, device=self.device, dtype=self.dtype)
        elif callable(weight):
            beta = run(lambda *a: torch.as_tensor(weight(*a)), self._updates)
            if beta.shape != (self.n,):
                raise ValueError(f"weight must return one scalar per client; got shape {tuple(beta.shape)}")
        else:
            beta = torch.as_tensor(weight, device=self.device, dtype=self.dtype)
        self.oracle_calls += 1
        return self.oracle.average(
            rows, beta.to(rows.dtype), weight_bound=weight_bound, transcript=self.transcript,
            label=label or f"{self.rule}:call{self.oracle_calls}")

    def reveal(self) -> Tensor:
        """The plaintext [n, d] updates; refused whenever secure aggregation is on."""
        if self.secure:
            raise SecureAggregationViolation(
                f"rule {self.rule!r} needs the individual client updates, but secure aggregation is "
                f"on (oracle {self.oracle.name!r}): the server only learns weighted averages. Use a "
                "secagg-compatible rule (e.g. fedavg, rfa) or run with secure aggregation off "
                "(--secagg off)")
        if not self.revealed:
            self.transcript.record_reveal(self.rule, self._updates)
            self.revealed = True
        return self._updates

    def __repr__(self) -> str:
        return (f"ClientUpdates(n={self.n}, d={self.d}, secure={self.secure}, "
                f"oracle={self.oracle.name!r}, rule={self.rule!r})")
