"""The server's points of contact with the clients, as a strategy the protocol receives.

Bonawitz et al. 2017, Fig. 4: between rounds the server lists keys, relays
ciphertexts, announces U3, asks for shares and (active model) forwards signatures.
:class:`HonestServer` does each honestly; a malicious server (:mod:`.adversary`)
subclasses it and cheats in some hooks. :class:`secagg.protocol.server.SecAggProtocol`
takes one as ``server=`` and calls it through its own same-named methods, so this
module needs nothing from the server or the adversaries.
"""
from __future__ import annotations

import weakref

from typing import Any, Dict, List, Optional, Tuple

from torch import Tensor

__all__ = ["HonestServer"]


class HonestServer:
    """The honest server's hooks (Bonawitz et al. 2017, Fig. 4), one protocol instance each.

    - :meth:`keys_for` (Round 0 -> 1): the advertised keys listed to a client;
    - :meth:`relay` (Round 1 -> 2): what the server forwards for each ciphertext;
    - :meth:`shares_for` (Round 2): which ciphertexts a client receives, i.e. its view of U2;
    - :meth:`survivors_for` (Round 2 -> 3): the U3 told to a client;
    - :meth:`unmask_request` (unmasking): the (survivors, dropped) sets sent to a client;
    - :meth:`signatures_for` (active model): the consistency signatures sent to a client;
    - :meth:`after_unmasking`: everything the server holds once the clients answered.

    :meth:`attach` binds it to its protocol (``self.proto``: the public parameters, the
    graph, the simulated clients). ``recovered`` holds the inputs the server unmasked
    alone ({client: int64 [d]}); an honest server never fills it.
    """

    name = "honest"

    def __init__(self):
        self.proto: Any = None
        self.recovered: Dict[int, Tensor] = {}
        self._all_sigs: Optional[Dict[int, bytes]] = None

    def attach(self, proto) -> None:
        """Bind to the protocol instance ``proto`` (called once, at the end of its constructor)."""
        if self.proto is not None:
            raise ValueError(f"this {type(self).__name__} already serves a protocol instance; "
                             "use a new server strategy per instance")
        # a weak reference: the protocol holds its server, and a cycle through the inputs (the
        # [n, d] updates) would keep them alive until the next garbage collection
        self.proto = weakref.proxy(proto)

    def keys_for(self, client: int, keys: Dict[int, bytes]) -> Dict[int, bytes]:
        """The advertised keys {v: c_v^PK || s_v^PK [|| sigma_v]} listed to ``client`` at the start of
        Fig. 4, Round 1 (honest: unchanged)."""
        return keys

    def relay(self, sender: int, recipient: int, ciphertext: bytes) -> bytes:
        """What the server forwards from ``sender`` to ``recipient`` in Fig. 4, Round 1 -> 2
        (honest: unchanged; pairs in the protocol's ``tamper`` get one bit flipped, as by a
        faulty network)."""
        if (sender, recipient) in self.proto.tamper:
            return bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
        return ciphertext

    def shares_for(self, client: int, ciphertexts: Dict[int, bytes]) -> Dict[int, bytes]:
        """The share ciphertexts {sender: ciphertext} delivered to ``client`` at the start of Fig. 4,
        Round 2; their senders are the client's view of U2 (honest: every one from U2)."""
        return ciphertexts

    def survivors_for(self, client: int, survivors: List[int]) -> List[int]:
        """The U3 the server tells ``client`` (Fig. 4; honest: the same U3 to everyone)."""
        return survivors

    def unmask_request(self, client: int, survivors: List[int], dropped: List[int]) -> Tuple[List[int], List[int]]:
        """The unmasking request sent to ``client`` (Fig. 4; honest: U3 and U2 \\ U3)."""
        return survivors, dropped

    def signatures_for(self, client: int, survivors: List[int],
                       collected: Dict[int, Tuple[Tuple[int, ...], bytes]]) -> Dict[int, bytes]:
        """Active model: the list {v: sigma'_v} sent to ``client`` before unmasking (Fig. 4,
        Unmasking round). ``collected`` maps each signer to (the U3 it was told, its signature).
        Honest: every signature collected (one list, the same for everyone)."""
        if self._all_sigs is None:
            self._all_sigs = {v: sig for v, (_, sig) in collected.items()}
        return self._all_sigs

    def after_unmasking(self, state: Dict[str, Any]) -> None:
        """Called with everything the server holds after the unmasking round: U1, U2, U3, the
        public keys, the clients' answers, the U3 told to each client and the collected
        signatures (honest: nothing to do; :mod:`.adversary` tries to unmask inputs here)."""
