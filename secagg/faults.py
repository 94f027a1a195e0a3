"""Fault injection for the masked protocol: a lossy, duplicating, reordering, corrupting network.

Bonawitz et al. 2017 (Sec. 2 and Fig. 4) run every client <-> server exchange over an
authenticated, private channel (TLS in practice) and protect what the server relays
between clients end to end (AES-GCM for shares; Ed25519 signatures for keys and U3 in
the active model, Sec. 6.2). :class:`FaultyNetwork` attacks both layers, seeded:

- **Links** (every client -> server and server -> client message, every round):
  each message is framed as seq || AES-GCM(payload) with the round, direction, client
  and sequence number as associated data, then independently lost, duplicated,
  truncated or bit-flipped, and each round's frames are reordered. The receiver
  drops frames that fail authentication and duplicates (by sequence number), as a
  TLS stack would: corruption becomes loss, never a different message. (The link keys
  come from the OS CSPRNG; no fault depends on the frames' bytes.)
- **Relay** (the content the server forwards between clients): share ciphertexts in
  both variants, and with active security also the advertised keys, the survivor set
  U3 and the consistency signatures, are truncated or bit-flipped *behind* the link
  authentication, as a faulty server would. The protocol's own end-to-end checks must
  catch them. (Without active security advertised keys and U3 are not end-to-end
  protected, so a faulty relay could make the sum wrong; the honest-but-curious model
  assumes an honest server, so those are not corrupted there.)

:func:`run_with_faults` runs one seeded instance and classifies the outcome;
:func:`fault_campaign` runs many and counts outcomes. Both opt in to the protocol's
``insecure_reproducible=True`` by default (``reproducible=True``), explicitly, so that a
seed always replays the same keys, graph and faults and the campaign's counts are exact;
``reproducible=False`` runs the same cases with fresh secrets (counts then vary slightly
with the random graphs, never the invariant: no wrong sum, no crash). The masked input y_u travels
as a header-only frame (its bytes are produced later by the data plane); a corrupted
frame is rejected by the same tag check whatever it carries.
"""
from __future__ import annotations

import os
import pickle
import random
from collections import Counter
from typing import Any, Dict, Optional, Tuple

import torch
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import crypto
from .encoding import modular_sum
from .errors import ProtocolViolationDetected, SecureAggregationAborted
from .pki import SimulatedPKI
from .protocol import ACTIVE_ROUNDS, ROUNDS, UnmaskingRefused, run_protocol

__all__ = ["FaultyNetwork", "run_with_faults", "fault_campaign", "OUTCOMES"]

OUTCOMES = ("exact", "aborted", "refused", "detected", "wrong", "crashed")
_RELAY_KINDS_HBC = ("share",)
_RELAY_KINDS_ACTIVE = ("keys", "share", "survivors", "signature")


def _rate(name: str, p: float) -> float:
    if not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name}={p!r} must be a probability in [0, 1]")
    return float(p)


class FaultyNetwork:
    """Seeded random faults on every channel of one protocol instance (see the module docstring).

    Rates are per message (``reorder``: per round and direction). ``counts`` tallies
    what was injected (lost, duplicated, truncated, bit_flipped, reordered,
    relay_corrupted) and what the receivers discarded (rejected, duplicate_discarded).
    """

    def __init__(self, seed: int, *, loss: float = 0.05, duplicate: float = 0.05, reorder: float = 0.5,
                 truncate: float = 0.02, bitflip: float = 0.02, relay: float = 0.0):
        self.loss, self.duplicate = _rate("loss", loss), _rate("duplicate", duplicate)
        self.reorder, self.truncate = _rate("reorder", reorder), _rate("truncate", truncate)
        self.bitflip, self.relay_rate = _rate("bitflip", bitflip), _rate("relay", relay)
        self.rng = random.Random(seed)
        self._key = os.urandom(32)   # the simulated TLS links' key
        self._aead: Dict[Tuple[str, int], AESGCM] = {}
        self._next: Counter = Counter()
        self._seen: Dict[Tuple[str, int], set] = {}
        self.counts: Counter = Counter()

    def _cipher(self, direction: str, party: int) -> AESGCM:
        link = (direction, party)
        if link not in self._aead:
            self._aead[link] = AESGCM(crypto.hkdf(self._key, info=f"{direction}/{party}".encode()))
        return self._aead[link]

    @staticmethod
    def _ad(rnd: str, direction: str, party: int, seq: bytes) -> bytes:
        return f"{rnd}|{direction}|{party}|".encode() + seq

    def _corrupt(self, frame: bytes) -> bytes:
        if frame and self.rng.random() < 0.5:
            self.counts["truncated"] += 1
            return frame[:self.rng.randrange(len(frame))]
        self.counts["bit_flipped"] += 1
        if not frame:
            return b"\x00"
        i = self.rng.randrange(len(frame) * 8)
        out = bytearray(frame)
        out[i // 8] ^= 1 << (i % 8)
        return bytes(out)

    def transmit(self, proto, rnd: str, direction: str, msgs: Dict[int, Any]) -> Dict[int, Any]:
        """Send one round's messages over the links ({party: payload}; ``direction`` "up" is
        client -> server, "down" server -> client); return what the receivers accept."""
        rng = self.rng
        frames = []
        for party in sorted(msgs):
            link = (direction, party)
            seq = self._next[link].to_bytes(8, "big")
            self._next[link] += 1
            body = self._cipher(direction, party).encrypt(seq + bytes(4), pickle.dumps(msgs[party], protocol=5),
                                                        self._ad(rnd, direction, party, seq))
            frame = seq + body
            if rng.random() < self.loss:
                self.counts["lost"] += 1
                continue
            copies = [frame]
            if rng.random() < self.duplicate:
                self.counts["duplicated"] += 1
                copies.append(frame)
            for i in range(len(copies)):
                if rng.random() < self.truncate + self.bitflip:
                    copies[i] = self._corrupt(copies[i])
            frames += [(party, c) for c in copies]
        if len(frames) > 1 and rng.random() < self.reorder:
            self.counts["reordered"] += 1
            rng.shuffle(frames)
        out: Dict[int, Any] = {}
        for party, frame in frames:
            seen = self._seen.setdefault((direction, party), set())
            seq = frame[:8]
            try:
                if len(frame) < 8:
                    raise InvalidTag
                plain = self._cipher(direction, party).decrypt(seq + bytes(4), frame[8:],
                                                               self._ad(rnd, direction, party, seq))
            except InvalidTag:
                self.counts["rejected"] += 1
                continue
            if seq in seen:
                self.counts["duplicate_discarded"] += 1
                continue
            seen.add(seq)
            out[party] = pickle.loads(plain)   # authenticated: produced by this simulation
        return out

    def relay(self, proto, kind: str, recipient: int, payload: bytes) -> bytes:
        """Corrupt end-to-end protected content the server relays (see the module docstring)."""
        kinds = _RELAY_KINDS_ACTIVE if proto.active else _RELAY_KINDS_HBC
        if kind not in kinds or self.relay_rate == 0.0 or self.rng.random() >= self.relay_rate:
            return payload
        self.counts["relay_corrupted"] += 1
        self.counts[f"relay_corrupted_{kind}"] += 1
        return self._corrupt(payload)


def _random_case(rng: random.Random, n_range, d_range) -> Dict[str, Any]:
    n = rng.randint(*n_range)
    d = rng.randint(*d_range)
    bits = rng.choice([b for b in (8, 16, 32, 64) if 2 ** b > n])
    active = rng.random() < 0.5
    # t > n/2; the actively secure variant needs t > 2n/3 (Bonawitz et al. 2017, Sec. 6.2).
    t = rng.randint(2 * n // 3 + 1 if active else n // 2 + 1, n)
    neighbors = None
    if rng.random() < 0.4:
        ks = [k for k in range(2, n - 1) if not (k % 2 and n % 2)]
        neighbors = rng.choice(ks) if ks else None
    rounds = ACTIVE_ROUNDS if active else ROUNDS
    drops: Dict[str, list] = {}
    rate = rng.choice([0.0, 0.0, 0.0, 0.1])
    for u in range(n):
        if rng.random() < rate:
            drops.setdefault(rng.choice(rounds), []).append(u)
    faults = dict(loss=rng.choice([0.0, 0.0, 0.01, 0.03]), duplicate=rng.choice([0.0, 0.05, 0.2]),
                  reorder=rng.choice([0.0, 0.5, 1.0]), truncate=rng.choice([0.0, 0.01, 0.03]),
                  bitflip=rng.choice([0.0, 0.01, 0.03]), relay=rng.choice([0.0, 0.01, 0.05]))
    return dict(n=n, d=d, bits=bits, active=active, threshold=t, neighbors=neighbors, dropouts=drops,
                faults=faults)


def run_with_faults(seed: int, *, n_range: Tuple[int, int] = (4, 6), d_range: Tuple[int, int] = (3, 8),
                    protocol_seed: int = 0, reproducible: bool = True,
                    pki: Optional[SimulatedPKI] = None) -> Tuple[str, Dict[str, Any]]:
    """One seeded instance under :class:`FaultyNetwork`: (outcome, details).

    The instance (n, d, modulus, t, graph, active security or not, dropouts, fault
    rates) is drawn from ``seed``. Outcomes: "exact" (the total is exactly the sum of
    the reported survivors' inputs), "aborted" (:class:`SecureAggregationAborted`),
    "refused" (:class:`UnmaskingRefused`), "detected"
    (:class:`ProtocolViolationDetected`), "wrong" (a total that is not that sum) and
    "crashed" (any other exception; the exception is in details). ``reproducible``
    (default True, see the module docstring): the protocol's secrets derive from
    (``protocol_seed``, ``seed``), INSECURE and exact; False: fresh secrets, with the
    long-term keys of ``pki`` (reused across runs, as in a deployment) or a fresh PKI.
    """
    rng = random.Random(seed)
    case = _random_case(rng, n_range, d_range)
    g = torch.Generator().manual_seed(seed)
    n, d, bits = case["n"], case["d"], case["bits"]
    if bits == 64:
        x = torch.randint(-2 ** 63, 2 ** 63 - 1, (n, d), generator=g, dtype=torch.int64)
    else:
        x = torch.randint(0, 2 ** bits, (n, d), generator=g, dtype=torch.int64)
    net = FaultyNetwork(seed, **case["faults"])
    details: Dict[str, Any] = {"case": case, "faults": net.counts}
    try:
        res = run_protocol(x, modulus_bits=bits, threshold=case["threshold"], neighbors=case["neighbors"],
                           dropouts=case["dropouts"], seed=protocol_seed, instance=seed,
                           active_security=case["active"], network=net, insecure_reproducible=reproducible,
                           pki=pki)
    except ProtocolViolationDetected as exc:
        details["check"] = exc.check
        return "detected", details
    except UnmaskingRefused:
        return "refused", details
    except SecureAggregationAborted as exc:
        details["round"] = getattr(exc, "round", None)
        return "aborted", details
    except Exception as exc:   # noqa: BLE001 - the harness counts crashes instead of stopping
        details["error"] = repr(exc)
        return "crashed", details
    details["survivors"] = res.survivors
    if torch.equal(res.total, modular_sum(x[res.survivors], bits)):
        return "exact", details
    return "wrong", details


def fault_campaign(runs: int, *, seed: int = 0, n_range: Tuple[int, int] = (4, 6),
                   d_range: Tuple[int, int] = (3, 8), progress: bool = False,
                   reproducible: bool = True) -> Dict[str, Any]:
    """Run ``runs`` seeded instances (seeds seed .. seed + runs - 1) under faults and count.

    Returns {"outcomes": {outcome: count} split also by variant ("active"/"honest-but-curious"),
    "faults": injected and discarded fault counts, "checks": detections per check,
    "abort_rounds": aborts per round, "failures": [(seed, outcome, details)] for "wrong" and
    "crashed"}.
    """
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs={runs!r} must be a positive int")
    outcomes: Counter = Counter()
    by_variant: Dict[str, Counter] = {"active": Counter(), "honest-but-curious": Counter()}
    faults: Counter = Counter()
    checks: Counter = Counter()
    rounds: Counter = Counter()
    failures = []
    pki = None if reproducible else SimulatedPKI()   # one set of long-term keys for the campaign
    it = range(seed, seed + runs)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="secagg fault campaign", unit="run")
    for s in it:
        outcome, det = run_with_faults(s, n_range=n_range, d_range=d_range, reproducible=reproducible, pki=pki)
        outcomes[outcome] += 1
        by_variant["active" if det["case"]["active"] else "honest-but-curious"][outcome] += 1
        faults.update(det["faults"])
        if "check" in det:
            checks[det["check"]] += 1
        if outcome == "aborted":
            rounds[det["round"]] += 1
        if outcome in ("wrong", "crashed"):
            failures.append((s, outcome, det))
    return {"runs": runs, "outcomes": {k: outcomes.get(k, 0) for k in OUTCOMES},
            "by_variant": {k: dict(v) for k, v in by_variant.items()}, "faults": dict(faults),
            "checks": dict(checks), "abort_rounds": dict(rounds), "failures": failures}


def _main(argv: Optional[list] = None) -> None:   # python -m secagg.faults RUNS
    import json
    import sys
    runs = int((argv or sys.argv[1:] or ["200"])[0])
    out = fault_campaign(runs, progress=True)
    out["failures"] = [(s, o, repr(d.get("error"))) for s, o, d in out["failures"]]
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    _main()
