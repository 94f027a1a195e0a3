"""secagg.protocol: SecAgg (Bonawitz et al. 2017, Fig. 4) and SecAgg+ (Bell et al. 2020), split by role and round.
May import: numpy, torch, cryptography and secagg's primitives (crypto, shamir, graph, pki, secrets, encoding, keystream, chacha20, errors).

Modules, by role and round (each imports only those listed before it):

- :mod:`.messages`: round names, public parameters, :class:`ProtocolResult`, aborts and
  detections, argument checks;
- :mod:`.dataplane`: mask expansion and the masked sum, on every core or on the inputs' device (Fig. 4, Rounds 2-3);
- :mod:`.active`: the honest client's checks of the active model (Fig. 4, red parts);
- :mod:`.client`: the honest client, :class:`SecAggClient` (Fig. 4, "User");
- :mod:`.strategy`: the server's hooks between rounds, :class:`HonestServer`;
- :mod:`.server`: the control plane running the rounds, :class:`SecAggProtocol`,
  which receives a server strategy;
- :mod:`.adversary`: malicious server strategies (Sec. 6.2), ``ADVERSARIES``;
- :mod:`.run`: :func:`run_protocol`, above the server and the adversaries.

Threat models (docs/security.md has the full table):

- ``active_security=False`` (default): honest-but-curious server and clients
  (Bonawitz et al. 2017, Sec. 6.1; t > n/2): everyone follows the protocol and the
  server records everything it sees (the server view in :class:`ProtocolResult`).
  The honest-client refusal of a double reveal is implemented nonetheless. Share
  ciphertexts are end-to-end AES-GCM: a tampered one is a dropped share.
- ``active_security=True``: the variant against an actively malicious server (Fig. 4
  with the red/underlined parts, Sec. 6.2; t > 2n/3, enforced, with fewer than n/3
  corrupt clients): signed keys, the ConsistencyCheck round and every honest client's
  checks (:mod:`.active`), which abort with :class:`ProtocolViolationDetected`.

Every secret comes from the OS CSPRNG, fresh per instance (:mod:`secagg.secrets`), unless
``insecure_reproducible=True``. The SecAgg+ graph and its share threshold for
``neighbors="auto"`` meet Bell et al. 2020's bound (:mod:`secagg.graph`); every result
carries that label (``ProtocolResult.bound``).

Malicious servers are server strategies (``run_protocol(adversary=...)``); a faulty
network (:mod:`secagg.faults`) carries every message when ``network`` is given.
Client <-> server links are assumed authenticated (TLS), as in Bonawitz et al.
"""
from ..errors import ProtocolViolationDetected
from .adversary import ADVERSARIES
from .client import SecAggClient
from .messages import ACTIVE_ROUNDS, ROUNDS, ProtocolResult, UnmaskingRefused
from .run import run_protocol
from .server import SecAggProtocol
from .strategy import HonestServer

__all__ = ["ROUNDS", "ACTIVE_ROUNDS", "ADVERSARIES", "ProtocolResult", "SecAggClient", "SecAggProtocol",
           "HonestServer", "UnmaskingRefused", "ProtocolViolationDetected", "run_protocol"]
