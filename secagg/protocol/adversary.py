"""Malicious-server strategies against the masked protocol (Bonawitz et al. 2017, Sec. 6.2).

Each strategy is an :class:`HonestServer` whose hooks cheat, given to
:class:`SecAggProtocol` as ``server=``; the clients stay honest (except the
``corrupt`` ones, which the server controls: it knows their secrets, reads the shares
they hold and has them sign anything, as the active model of Bonawitz et al. allows
for n_C clients). After the unmasking round the server tries to unmask each client's
masked input y_v *alone* from everything it holds (shares the honest clients
revealed, shares held by corrupt clients, shares it read through substituted keys):
:attr:`recovered` maps v to the x_v it computed. Run through
``run_protocol(values, ..., adversary=NAME, adversary_options={...})``.

Strategies (``ADVERSARIES``):

- ``double-reveal``: asks every honest client for both the b-share and the s^SK-share
  of ``target``. The honest-but-curious refusal rule already stops it
  (:class:`UnmaskingRefused`); with active security the request contradicts the
  signed U3 (:class:`ProtocolViolationDetected`).
- ``inconsistent-survivors``: tells odd-indexed clients that ``target`` dropped and
  the others that it survived. Without active security each story is short of
  shares when t > n/2 (clean abort) or one story completes (exact sum); with it,
  the clients told the minority story see fewer than t signatures on it (detection).
- ``key-substitution``: replaces the channel key c^PK of every neighbour in the list
  sent to ``target`` (and ``target``'s in the lists sent to the neighbours) with keys
  of its own, and re-encrypts what it relays (a man in the middle on every share
  channel of ``target``). Without signatures this works: the sum stays exact and the
  server reads all of ``target``'s shares, hence b and s^SK, hence x_target. With
  active security the keys do not carry the owners' signatures (detection in Round 1).
- ``replay``: relays, for one edge into a neighbour of ``target``, the ciphertext of
  the same edge recorded from another protocol instance, and for another edge the
  ciphertext of a different pair; with active security also replays a consistency
  signature from the other instance. AES-GCM binds instance, sender and recipient,
  and the signature binds the instance: dropped shares (exact sum or abort) without
  active security, detection with it.
- ``drop-and-unmask``: receives ``target``'s masked input, then declares ``target``
  dropped to some of its share holders (they reveal s^SK-shares) and alive to the
  others (they reveal b-shares). See :class:`DropAndUnmask` for exactly when this
  works without active security and why the consistency check stops it.
- ``split-shares``: withholds ``target``'s share ciphertexts from every other neighbour,
  so the clients' views of U2 disagree (``target`` masks with them, they do not mask with
  it). Without active security the server's bookkeeping aborts (the pairwise masks could
  never be removed); with it the deprived neighbours see ``target`` in the signed U3
  outside their U2 (detection).
- ``isolate``: declares every neighbour of ``target`` dropped (after their masked inputs
  arrived), so the holders reveal the neighbours' s^SK-shares and ``target``'s b-shares:
  every mask of y_target can be regenerated. Without active security this recovers
  ``target`` on any graph; with it, on the complete graph U3 falls below t, and on a sparse
  graph the holders of ``target``'s shares see it keep fewer than t_s neighbours in U3
  (check ``neighbours in U3``) and reveal nothing.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
import torch

from .. import crypto, shamir
from ..pki import encode_clients, survivors_message
from ..secrets import server_key_pairs
from .client import share_channel_context
from .dataplane import reduce_mod
from .server import SecAggProtocol
from .strategy import HonestServer

__all__ = ["ADVERSARIES", "ActiveServer", "DoubleReveal", "InconsistentSurvivors", "KeySubstitution", "Replay",
           "DropAndUnmask", "SplitShares", "Isolate", "make_adversary"]


class ActiveServer(HonestServer):
    """Base of the malicious servers: ``target`` (client attacked, default 0), ``corrupt``
    (clients colluding with the server, default none) and the unmasking attempt."""

    name = "active-server"

    def __init__(self, *, target: int = 0, corrupt: Iterable[int] = ()):
        super().__init__()
        self._target, self._corrupt = target, corrupt
        # Shares the server holds, whatever their source: {kind: {owner: {holder: share}}}.
        self.held: Dict[str, Dict[int, Dict[int, int]]] = {"b": {}, "s": {}}

    def attach(self, proto) -> None:
        # The options are checked against n, known once the protocol is built.
        super().attach(proto)
        target, n = self._target, proto.n
        if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= int(target) < n:
            raise ValueError(f"target={target!r} must be a client index in [0, {n})")
        self.target = int(target)
        self.corrupt = sorted({int(c) for c in self._corrupt})
        bad = [c for c in self.corrupt if not 0 <= c < n or c == self.target]
        if bad:
            raise ValueError(f"corrupt={bad}: corrupt clients are indices in [0, {n}) other than the target")

    # Corrupt clients sign whatever story the server needs (they hold their own d_u^SK).
    def _corrupt_signature(self, c: int, story: List[int]) -> bytes:
        p = self.proto
        return p.pki.sign(c, survivors_message(p.tag, encode_clients(story)))

    def signatures_for(self, client, survivors, collected):
        # Send each client only the signatures on the story it was told (others would fail
        # its check at once), topped up by the corrupt clients' signatures on that story.
        story = tuple(sorted(survivors))
        out = {v: sig for v, (told, sig) in collected.items() if told == story and v not in self.corrupt}
        if self.proto.active:
            for c in self.corrupt:
                if c in story:
                    out[c] = self._corrupt_signature(c, list(story))
        return out

    def _hold(self, kind: str, owner: int, holder: int, share: int) -> None:
        self.held[kind].setdefault(owner, {})[holder] = share

    def after_unmasking(self, state: Dict[str, Any]) -> None:
        for u, resp in state["answers"].items():
            for kind in ("b", "s"):
                for v, sh in resp[kind].items():
                    self._hold(kind, v, u, sh)
        for c in self.corrupt:            # the server reads what its clients hold
            for v, (s_share, b_share) in self.proto.clients[c].held_shares().items():
                self._hold("s", v, c, s_share)
                self._hold("b", v, c, b_share)
        self._attempt(state["U2"], state["U3"], state["public"])

    def _secret(self, kind: str, v: int) -> Optional[bytes]:
        shares = self.held[kind].get(v, {})
        t = self.proto.share_threshold
        if len(shares) < t:
            return None
        try:
            return shamir.int_to_secret(shamir.reconstruct(shares, t))
        except ValueError:
            return None

    def _mask_key(self, v: int, public) -> Optional[bytes]:
        # s_v^SK if the server holds it: v is corrupt, or enough s-shares of v were revealed.
        p = self.proto
        if v in self.corrupt:
            return p.clients[v].mask_secret()
        sk = self._secret("s", v)
        if sk is None or crypto.public_bytes(crypto.X25519PrivateKey.from_private_bytes(sk)) != public[v][1]:
            return None
        return sk

    def _attempt(self, U2, U3, public) -> None:
        """Unmask y_v alone for every v whose masked input the server holds, whose b_v it can
        reconstruct, and whose every pairwise mask it can regenerate: from s_v^SK, or from s_w^SK
        of each neighbour w that v masked with (a dropped or corrupt one):
        x_v = y_v - PRG(b_v) - sum_{w<v} PRG(s_vw) + sum_{w>v} PRG(s_vw)."""
        p = self.proto
        for v in sorted(set(U3) - set(self.corrupt)):   # a colluder's input is the server's already
            b = self._secret("b", v)
            if b is None:
                continue
            view = p.clients[v].u2_view()
            partners = [w for w in p.graph[v] if w in view]
            sk = self._mask_key(v, public)
            keys = {}
            for w in partners:
                own = sk if sk is not None else self._mask_key(w, public)
                if own is None:
                    break
                keys[w] = crypto.agree(own, public[w][1] if own is sk else public[v][1])
            if len(keys) < len(partners):
                continue
            y = p.masked_row(v, view)    # what v sent in Round 2
            y = y - crypto.prg_words(crypto.mask_key(b, "self"), p.d, p.bits).astype(np.uint64)
            for w in partners:
                m = crypto.prg_words(crypto.mask_key(keys[w], "pair"), p.d, p.bits).astype(np.uint64)
                y = y - m if w < v else y + m
            x = torch.from_numpy(reduce_mod(y, p.bits).view(np.int64).copy())
            if p.bits < 64:
                x = x & ((1 << p.bits) - 1)
            self.recovered[v] = x


class Isolate(ActiveServer):
    """Declares every neighbour of ``target`` dropped after their masked inputs arrived (one story,
    told to everyone): holders reveal the neighbours' s^SK-shares and ``target``'s b-shares, which
    regenerate every mask of y_target. On the complete graph U3 would shrink to ``target`` alone
    (below t); on a sparse graph |U3| stays >= t."""

    name = "isolate"

    def survivors_for(self, client, survivors):
        if self.target not in survivors:
            return survivors
        gone = set(self.proto.graph[self.target])
        return [u for u in survivors if u not in gone]


class DoubleReveal(ActiveServer):
    """Asks every honest client for both shares of ``target`` (Bonawitz et al. 2017, Fig. 4, Round 3)."""

    name = "double-reveal"

    def unmask_request(self, client, survivors, dropped):
        v = self.target if self.target in survivors else survivors[0]
        return survivors, sorted(set(dropped) | {v})


class InconsistentSurvivors(ActiveServer):
    """Tells odd-indexed clients that ``target`` dropped and the others that it survived."""

    name = "inconsistent-survivors"

    def survivors_for(self, client, survivors):
        if client % 2 == 1 and client != self.target and self.target in survivors:
            return [u for u in survivors if u != self.target]
        return survivors


class DropAndUnmask(ActiveServer):
    """Declares a live ``target`` dropped after receiving its masked input, to unmask it alone.

    The server holds y_v = x_v + PRG(b_v) + pairwise masks. It needs both b_v (told
    "v survived", a holder reveals its b-share of v) and s_v^SK (told "v dropped", a
    holder reveals its s-share), t_s shares of each, t_s the (per-client) Shamir threshold.

    What the honest-but-curious protocol's refusal rule already blocks: one honest
    client revealing both shares of v (it refuses, :class:`UnmaskingRefused`). Hence
    with only honest holders the server must split them into a group A told "v
    survived" and a disjoint group B told "v dropped", and needs |A| >= t_s and
    |B| >= t_s, impossible when t_s is a strict majority of v's holders (t > n/2 on
    the complete graph, the SecAgg+ default on k-regular graphs): the attack then
    fails (one story lacks shares), with or without active security.

    What it does not block: nothing ties A's story to B's. With n_C holders of v
    corrupt (they give both shares) the server needs only |A| + n_C >= t_s and
    |B| + n_C >= t_s. On a sparse SecAgg+ graph t_s is a majority of v's k + 1
    holders only, so one corrupt neighbour can suffice (k = 4: 5 holders, t_s = 3;
    A = {v, h1}, B = {h2, h3}, plus the corrupt one in both) and the server recovers
    x_v while every honest client followed the protocol and refused every double
    reveal. With active security every honest client signs the U3 it was told and
    unmasks only after t valid signatures on that same U3 (ConsistencyCheck): the
    story "v dropped" needs t signers overall, not t_s holders, i.e. |B| + n_C >= t
    besides the t signers of the other story, which needs 2t - n_C <= n (Bonawitz et
    al.: t > 2n/3 and n_C < n/3 rule it out). The clients of B then detect the lie
    (:class:`ProtocolViolationDetected`) and reveal nothing.

    The split: A = ``target`` and the first honest holders needed to reach t_s b-shares
    with the corrupt ones; B = the other honest holders; everyone else is told the truth.
    """

    name = "drop-and-unmask"

    def _groups(self, survivors) -> Tuple[set, set]:
        v = self.target
        holders = [h for h in [v] + self.proto.graph[v] if h in survivors]
        honest = [h for h in holders if h not in self.corrupt and h != v]
        need = max(self.proto.share_threshold - sum(1 for h in holders if h in self.corrupt) - 1, 0)
        return {v} | set(honest[:need]), set(honest[need:])

    def survivors_for(self, client, survivors):
        if self.target not in survivors:
            return survivors
        _, B = self._groups(survivors)
        return [u for u in survivors if u != self.target] if client in B else survivors


class KeySubstitution(ActiveServer):
    """Man in the middle on every share channel of ``target`` via substituted channel keys."""

    name = "key-substitution"

    def attach(self, proto) -> None:
        super().attach(proto)
        # The server's stand-in c keys: its own randomness (seeded only in a reproducible run).
        self._fake = (server_key_pairs(proto.n, seed=proto.seed, instance=proto.instance)
                      if proto.insecure_reproducible else server_key_pairs(proto.n))

    def keys_for(self, client, keys):
        v = self.target
        fake = {w: crypto.public_bytes(self._fake[w]) for w in keys}
        if client == v:
            return {w: (fake[w] + b[32:] if w != v else b) for w, b in keys.items()}
        if v in keys:
            keys = dict(keys)
            keys[v] = fake[v] + keys[v][32:]
        return keys

    def _cipher(self, fake_of: int, real_of: int):
        return crypto.channel_cipher(crypto.agree(self._fake[fake_of], self._real_c(real_of)))

    def _real_c(self, u: int) -> bytes:
        return self.proto.clients[u].advertise_keys()[0]

    def relay(self, sender, recipient, ciphertext):
        v = self.target
        if v not in (sender, recipient):
            return ciphertext
        nonce, ad = share_channel_context(self.proto.tag, sender, recipient)
        # The sender encrypted to the recipient's substituted key: the server holds its secret.
        try:
            pt = self._cipher(recipient, sender).decrypt(nonce, ciphertext, ad)
        except Exception:   # noqa: BLE001 - not decryptable: forward as is
            return ciphertext
        k = shamir.SHARE_BYTES
        self._hold("s", sender, recipient, int.from_bytes(pt[8:8 + k], "big"))
        self._hold("b", sender, recipient, int.from_bytes(pt[8 + k:8 + 2 * k], "big"))
        # Re-encrypt to the recipient, which sees the sender's substituted key.
        return self._cipher(sender, recipient).encrypt(nonce, pt, ad)


class Replay(ActiveServer):
    """Replays a ciphertext (and, with active security, a signature) from another instance or pair."""

    name = "replay"

    def attach(self, proto) -> None:
        super().attach(proto)
        p = proto
        other_kw = dict(modulus_bits=p.bits, threshold=p.threshold, neighbors=p.graph,
                        share_threshold=p.share_threshold, seed=p.seed, instance=p.instance + 1,
                        allow_insecure_threshold=True, active_security=p.active,
                        insecure_reproducible=p.insecure_reproducible, pki=p.pki_registry)
        # The server recorded an earlier, honest instance among the same clients.
        self._other = SecAggProtocol(p.values, **other_kw).run()
        nb = p.graph[self.target]
        self.r = nb[0] if nb else self.target
        others = [w for w in p.graph[self.r] if w != self.target]
        self.swap = (others[0], others[1]) if len(others) >= 2 else None
        self._kept: Dict[Tuple[int, int], bytes] = {}

    def relay(self, sender, recipient, ciphertext):
        self._kept[(sender, recipient)] = ciphertext
        if (sender, recipient) == (self.target, self.r):
            return self._other.ciphertexts.get((sender, recipient), ciphertext)
        if self.swap and (sender, recipient) == (self.swap[0], self.r) and (self.swap[1], self.r) in self._kept:
            return self._kept[(self.swap[1], self.r)]
        if self.swap and (sender, recipient) == (self.swap[1], self.r) and (self.swap[0], self.r) in self._kept:
            return self._kept[(self.swap[0], self.r)]
        return ciphertext

    def signatures_for(self, client, survivors, collected):
        out = super().signatures_for(client, survivors, collected)
        old = self._other.signatures
        for v in sorted(out):
            if v in old:
                out[v] = old[v]          # v's signature from the other instance
                break
        return out


class SplitShares(ActiveServer):
    """Withholds ``target``'s share ciphertexts from every other neighbour of ``target`` (Fig. 4,
    Round 2): the clients' views of U2 then disagree about ``target``."""

    name = "split-shares"

    def shares_for(self, client, ciphertexts):
        deprived = self.proto.graph[self.target][1::2]
        if client in deprived and self.target in ciphertexts:
            return {v: ct for v, ct in ciphertexts.items() if v != self.target}
        return ciphertexts


STRATEGIES = {cls.name: cls for cls in (DoubleReveal, InconsistentSurvivors, KeySubstitution, Replay,
                                        DropAndUnmask, SplitShares, Isolate)}
ADVERSARIES = tuple(STRATEGIES)   # the names ``run_protocol(adversary=...)`` accepts


def make_adversary(name: str, options: Optional[Mapping[str, Any]] = None) -> ActiveServer:
    """The malicious server strategy ``name`` (one of ``ADVERSARIES``) with ``options``
    (``target``, ``corrupt``), ready to pass as ``SecAggProtocol(..., server=...)``."""
    if name not in STRATEGIES:
        raise ValueError(f"adversary={name!r}; choose one of {ADVERSARIES}")
    opts = dict(options or {})
    unknown = set(opts) - {"target", "corrupt"}
    if unknown:
        raise ValueError(f"unknown adversary option(s) {sorted(unknown)}; use 'target' and 'corrupt'")
    return STRATEGIES[name](**opts)
