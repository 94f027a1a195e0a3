"""The honest client's checks of the actively secure variant (Bonawitz et al. 2017, Fig. 4, red parts).

Threat model (Sec. 6.2; t > 2n/3 with fewer than n/3 corrupt clients): the server is
actively malicious. Clients sign c_u^PK || s_u^PK with long-term Ed25519 keys
registered in a simulated PKI (:mod:`secagg.pki`); a ConsistencyCheck round follows
the masked inputs: the server sends U3, each survivor checks it and returns
SIG.sign(d_u^SK, U3); before unmasking each client requires at least t valid
signatures on the U3 it signed and a request that matches it. Every failed check
raises :class:`ProtocolViolationDetected` naming the check and the party at fault (the
client then aborts; the instance raises it). A share ciphertext that fails
authentication is a detected violation here, not a dropped share. On a SecAgg+ graph
(Bell et al. 2020) a client also refuses a U3 that leaves it or a neighbour fewer than t_s
neighbours in U3 (``neighbours in U3``, :func:`check_survivor_set`).

Each function is one assertion block of Fig. 4, on what the client holds; they keep
no state. Simulation choice: every client verifies the same (signer, message,
signature) triples, so each distinct triple is verified once per instance and the
verdict reused (:class:`secagg.pki.SimulatedPKI`); likewise the verdict on one
signature list for one U3.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Mapping, Optional, Set, Tuple

from ..pki import decode_clients, decode_signatures, encode_signatures, key_message
from .messages import PublicParams, violation

__all__ = ["check_advertised_key", "check_key_list", "check_share_senders", "check_survivor_set",
           "signature_verdict", "check_signatures", "check_unmask_request"]


def _needed(p: PublicParams) -> int:
    # Clients a client must see: t on the complete graph, its own share threshold on SecAgg+.
    return p.threshold if p.complete else p.share_threshold


def check_advertised_key(p: PublicParams, tag: bytes, u: int, v: int, c: bytes, s: bytes, signature: bytes) -> None:
    """Fig. 4, Round 1 (red): client v's keys, listed to u, come from a graph neighbour and
    carry v's signature sigma_v on c_v^PK || s_v^PK."""
    rnd = "share_keys"
    if v != u and not p.complete and v not in p.graph[u]:
        raise violation(rnd, "neighbourhood", u, f"client {v} is not a neighbour of client {u} in "
                        "the public graph", subject=v)
    if not p.pki.verify(v, key_message(tag, v, c, s), signature):
        raise violation(rnd, "advertised-key signature", u,
                        f"the keys relayed for client {v} do not carry client {v}'s signature "
                        "(substituted or corrupted keys)", subject=v)


def check_key_list(p: PublicParams, u: int, parsed: Mapping[int, Tuple[bytes, bytes]],
                   own: Tuple[bytes, bytes]) -> None:
    """Fig. 4, Round 1 (red): u's own keys unaltered, all keys pairwise distinct, enough clients."""
    rnd = "share_keys"
    if parsed.get(u) != own:
        raise violation(rnd, "own advertised keys", u, "the server did not relay client "
                        f"{u}'s own keys unaltered", subject=u)
    flat = [k for pair in parsed.values() for k in pair]
    if len(set(flat)) != len(flat):
        raise violation(rnd, "distinct keys", u, "two advertised public keys are equal")
    need = _needed(p)
    if len(parsed) < need:
        raise violation(rnd, "enough clients", u, f"only {len(parsed)} clients' keys were listed, "
                        f"fewer than {need}")


def check_share_senders(p: PublicParams, u: int, senders: Iterable, accepted: Mapping[int, object]) -> None:
    """Fig. 4, Round 2 (red): every share ciphertext comes from a client whose keys u accepted,
    and U2 (the senders and u) has at least t (SecAgg+: the per-client threshold) clients."""
    senders = list(senders)
    for v in senders:
        if v == u or v not in accepted:
            raise violation("masked_input", "unexpected share sender", u,
                            f"a share ciphertext is attributed to client {v}, whose keys client {u} "
                            "never accepted", subject=v if isinstance(v, int) else None)
    need = _needed(p)
    if len(senders) + 1 < need:
        raise violation("masked_input", "enough clients", u, f"only {len(senders) + 1} clients "
                        f"(with u) are in U2, fewer than {need}")


def _isolated(p: PublicParams, U3: Tuple[int, ...]) -> dict:
    # {v in U3: its neighbours in U3} for the v with fewer than t_s of them; one verdict per U3
    # (every client computes the same from the public graph).
    key = ("isolated", U3)
    if key not in p.memo:
        S = set(U3)
        counts = {v: sum(1 for w in p.graph[v] if w in S) for v in U3}
        p.memo[key] = {v: c for v, c in counts.items() if c < p.share_threshold}
    return p.memo[key]


def check_survivor_set(p: PublicParams, u: int, blob: bytes, accepted: Iterable[int],
                       u2: Set[int]) -> Tuple[int, ...]:
    """Fig. 4, ConsistencyCheck: U3 is a well-formed set containing u (u sent its masked
    input), within U2 as far as u can see (its share holders), of size >= t. Returns U3.

    SecAgg+ (Bell et al. 2020) adds: u itself and each neighbour in U3, whose b-shares u would
    reveal, keeps at least t_s neighbours in U3. With fewer than t_s corrupt neighbours (the
    bound's S1) that leaves each an honest neighbour in U3 whose pairwise mask the server can
    never regenerate; without it a server that declares a client's neighbours dropped would
    reconstruct their s^SK and, with the client's b, unmask it (strategy ``isolate``)."""
    rnd = "consistency_check"
    try:
        U3 = decode_clients(blob, p.n)
    except ValueError as exc:
        raise violation(rnd, "malformed survivor set", u, str(exc)) from None
    S = set(U3)
    if u not in S:
        raise violation(rnd, "own masked input", u, f"client {u} sent its masked input but is not in U3")
    outside = sorted(v for v in accepted if v in S and v not in u2)
    if outside:
        raise violation(rnd, "survivors within U2", u, f"U3 lists client(s) {outside[:10]} whose shares never "
                        "reached u (not in U2)", subject=outside[0])
    if len(S) < p.threshold:
        raise violation(rnd, "survivor set size", u, f"|U3| = {len(S)} < t = {p.threshold}")
    if not p.complete:   # on the complete graph |U3| >= t > 2n/3 already leaves honest neighbours
        thin = _isolated(p, U3)
        for v in [u] + p.graph[u]:
            if v in thin:
                raise violation(rnd, "neighbours in U3", u, f"client {v} keeps only {thin[v]} neighbour(s) in U3, "
                                f"fewer than t_s = {p.share_threshold}: revealing its self-mask seed share could "
                                "unmask it (its neighbours dropped, or the server declared them dropped)", subject=v)
    return U3


def signature_verdict(p: PublicParams, u3: Tuple[int, ...], u3_msg: bytes, blob: bytes):
    """None if ``blob`` lists >= t valid signatures on the U3 message from clients of U3, else
    (check, message, subject). A function of (U3 message, list bytes) only."""
    S = set(u3)
    digest = hashlib.sha256(u3_msg).digest()
    try:
        entries = decode_signatures(blob)
    except ValueError as exc:
        return "malformed signature list", str(exc), None
    for v, sig in entries:
        if v not in S:
            return "signers within U3", f"a consistency signature comes from client {v}, not in U3", v
        if not p.pki.verify(v, u3_msg, sig, digest):
            return ("consistency signature", f"client {v}'s signature does not verify on the U3 that u "
                    "signed: the server told clients different survivor sets, or a signature was altered", v)
    if len(entries) < p.threshold:
        return ("consistency threshold", f"only {len(entries)} valid signatures on u's U3, fewer than "
                f"t = {p.threshold}", None)
    return None


def check_signatures(p: PublicParams, u: int, u3: Optional[Tuple[int, ...]], u3_msg: Optional[bytes],
                     signatures) -> None:
    """Fig. 4, Unmasking (red): U4 within U3, |U4| >= t, every sigma'_v verifies on the U3 u signed.
    ``signatures`` is {v: sigma'_v} or its wire encoding."""
    rnd = "unmasking"
    if u3 is None:
        raise violation(rnd, "consistency check first", u, "asked to unmask before signing a survivor set")
    if isinstance(signatures, Mapping):
        try:
            signatures = encode_signatures(signatures)
        except (TypeError, ValueError, OverflowError):
            signatures = b"\x00"      # not encodable: malformed
    if not isinstance(signatures, (bytes, bytearray)):
        raise violation(rnd, "malformed signature list", u, "the consistency signatures are not a list")
    # Every client that signed the same U3 and got the same list reaches the same verdict.
    key = (hashlib.sha256(u3_msg).digest(), bytes(signatures))
    cache = p.pki.list_verdicts
    if key not in cache:
        cache[key] = signature_verdict(p, u3, u3_msg, bytes(signatures))
    bad = cache[key]
    if bad is not None:
        raise violation(rnd, bad[0], u, bad[1], subject=bad[2])


def check_unmask_request(u: int, survivors: Set[int], dropped: Set[int], u3: Tuple[int, ...]) -> None:
    """Fig. 4, Unmasking (red): the request's survivors are the U3 u signed, and no client is
    asked for with both kinds of share."""
    if survivors != set(u3):
        raise violation("unmasking", "request matches the signed U3", u,
                        "the survivors in the unmasking request differ from the U3 that u signed")
    if survivors & dropped:
        raise violation("unmasking", "double reveal", u, f"asked for both shares of client(s) "
                        f"{sorted(survivors & dropped)[:10]}", subject=min(survivors & dropped))
