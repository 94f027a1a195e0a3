"""The run options every command shares (``fedaudit run``, ``audit``, ``tradeoff``), and their
parsing into a :class:`protocols.simulation.RunConfig`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from protocols.runner import protocol_names
from protocols.simulation import DP_MODES, SECAGG_MODES, RunConfig


def prepare_output_dir(path, option: str = "--out") -> Path:
    """Check and create the output folder ``path`` before any work, so that no finished job is
    lost to an unwritable location: it is created (with its parents) when missing, and a file
    is created and removed in it to prove it writable. An existing file at the path, a folder
    that cannot be written or a parent that cannot be created raise ``ValueError`` (one line
    naming the path and the fix; ``fedaudit`` exits with status 2)."""
    import os
    import tempfile
    if path is None or str(path) == "":
        raise ValueError(f"{option} needs a folder path")
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ValueError(f"{option} {str(p)!r} is an existing file, not a folder; give a folder path "
                         f"(e.g. {option} {str(p.with_suffix(''))}-results) or move the file away")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ValueError(f"{option} {str(p)!r}: a parent of this path is a file, not a folder; "
                         "choose another location") from None
    except NotADirectoryError:
        raise ValueError(f"{option} {str(p)!r}: a parent of this path is a file, not a folder; "
                         "choose another location") from None
    except OSError as exc:
        raise ValueError(f"{option} {str(p)!r} cannot be created ({exc.strerror or exc}); choose a folder "
                         "you can write to, or fix the parent's permissions") from None
    try:
        fd, probe = tempfile.mkstemp(dir=p, prefix=".fedaudit-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"{option} {str(p)!r} is not writable ({exc.strerror or exc}); choose a folder you "
                         "can write to, or fix its permissions (chmod u+w)") from None
    return p


def parse_kv(items: Sequence[str], what: str) -> Dict[str, Any]:
    """``["k=v", ...]`` as a dict, each value parsed as JSON where it parses (numbers, booleans,
    lists), else kept as text. ``what`` names the option in the error."""
    out: Dict[str, Any] = {}
    for item in items or []:
        if "=" not in item or not item.split("=", 1)[0]:
            raise ValueError(f"{what} {item!r} must look like key=value (e.g. {what} beta=0.1)")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def neighbors_arg(text: str):
    """``--neighbors``: "auto" (SecAgg+ from Bell et al.'s bound) or a degree k."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--neighbors {text!r}: use 'auto' or an int degree k") from None


def add_run_options(p: argparse.ArgumentParser, out_help: Optional[str] = None) -> None:
    """The run options on parser ``p``; ``out_help``: the command's own words for ``--out``."""
    d = RunConfig()
    p.add_argument("--protocol", default=d.protocol, choices=protocol_names(),
                   help="params: clients share model updates, aggregated by --rule; cronus: clients share "
                        "predictions on a public set (default: %(default)s)")
    p.add_argument("--protocol-arg", action="append", default=[], metavar="K=V",
                   help="protocol parameter (repeatable; e.g. cronus public_size=500)")
    p.add_argument("--dataset", default=d.dataset, help="dataset name (default: %(default)s; "
                   "see `fedaudit list datasets`)")
    p.add_argument("--data-dir", default=d.data_dir, help="folder of an on-disk dataset")
    p.add_argument("--clients", type=int, default=d.clients, help="number of clients (default: %(default)s)")
    p.add_argument("--clients-per-round", type=int, default=d.clients_per_round,
                   help="clients sampled per round (default: all)")
    p.add_argument("--rounds", type=int, default=d.rounds, help="communication rounds (default: %(default)s)")
    p.add_argument("--partition", default=d.partition,
                   help="how the training data is split across clients: iid | dirichlet (label skew, --alpha) | "
                   "shards (--labels-per-client) | qgroup (FLTrust, --partition-arg q=0.5) | natural (the "
                   "dataset's own users: shakespeare, femnist, sent140) | auto (default: the dataset's own "
                   "choice, dirichlet for digits, natural for shakespeare; `fedaudit list datasets`)")
    p.add_argument("--partition-arg", action="append", default=[], metavar="K=V",
                   help="partitioner parameter (repeatable; e.g. q=0.5 for --partition qgroup)")
    p.add_argument("--alpha", type=float, default=d.alpha, help="Dirichlet concentration (default: %(default)s)")
    p.add_argument("--labels-per-client", type=int, default=d.labels_per_client,
                   help="labels per client for --partition shards (default: %(default)s)")
    p.add_argument("--model", default=d.model, help="model (default: %(default)s, the dataset's own; see `fedaudit list models`)")
    p.add_argument("--rule", default=d.rule, help="aggregation rule (default: %(default)s; see `fedaudit list rules`)")
    p.add_argument("--rule-arg", action="append", default=[], metavar="K=V", help="rule parameter (repeatable)")
    p.add_argument("--attack", default=d.attack, help="poisoning attack of the corrupted clients "
                   "(default: none; see `fedaudit list attacks`)")
    p.add_argument("--attack-arg", action="append", default=[], metavar="K=V", help="attack parameter (repeatable)")
    p.add_argument("--corrupt", type=float, default=d.corrupt,
                   help="fraction rho of corrupted clients (default: %(default)s)")
    p.add_argument("--secagg", default=d.secagg, choices=SECAGG_MODES,
                   help="secure aggregation: off (server sees updates), plaintext (ideal oracle), "
                        "quantized (fixed-point oracle), masked (Bonawitz protocol) (default: %(default)s)")
    p.add_argument("--bits", type=int, default=d.bits, help="log2 of the secagg modulus (default: %(default)s)")
    p.add_argument("--clip", type=float, default=d.clip,
                   help="per-coordinate bound of the fixed-point encoding (default: %(default)s)")
    p.add_argument("--overflow", default=d.overflow, choices=["raise", "clip"],
                   help="an update coordinate beyond --clip: raise an error, or clip it and count it "
                        "in the per-round history (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=d.threshold,
                   help="masked: Shamir threshold, a count or a fraction of clients (default: protocol's)")
    p.add_argument("--neighbors", type=neighbors_arg, default=d.neighbors,
                   help="masked: 'auto' for SecAgg+ with the degree and share threshold that meet Bell et al. "
                        "2020's bound for --corrupt-fraction and --dropout-fraction, or a degree k for a "
                        "random k-regular graph not checked against it (default: complete graph)")
    p.add_argument("--corrupt-fraction", type=float, default=d.corrupt_fraction,
                   help="masked: fraction of clients that may collude with the server, the threat model of "
                        "the bound (default: max(0.1, --corrupt))")
    p.add_argument("--dropout-fraction", type=float, default=d.dropout_fraction,
                   help="masked: fraction of clients that may drop in one protocol call, for the bound "
                        "(default: max(0.1, --dropout-rate))")
    p.add_argument("--dropout-rate", type=float, default=d.dropout_rate,
                   help="masked: fraction of the clients that drop in each protocol call, round(rate x n) chosen "
                        "at random per call; a rate that leaves fewer than the threshold is refused "
                        "(default: %(default)s)")
    p.add_argument("--on-abort", default=d.on_abort, choices=["continue", "stop"],
                   help="masked: when too few clients survive a protocol call and it aborts, continue (the "
                        "round keeps the model, as a real server would; the round's record says so) or stop "
                        "(result.json still written, with the rounds done and the reason) (default: %(default)s)")
    p.add_argument("--personalize", action="store_true",
                   help="RFA Alg. 4 personalization: per-client parameters u_i, only w aggregated")
    p.add_argument("--client-holdout", type=float, default=d.client_holdout,
                   help="fraction of each client's data held out for per-client accuracy "
                        "(default: 0, or 0.2 when personalized)")
    p.add_argument("--local-epochs", type=int, default=d.local_epochs,
                   help="local epochs per round (default: the dataset's preset, else 2)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="(default: %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr,
                   help="client learning rate (default: the dataset's preset, e.g. shakespeare 0.8, else 0.05)")
    p.add_argument("--momentum", type=float, default=d.momentum, help="client momentum (default: %(default)s)")
    p.add_argument("--adv-reg", type=float, default=d.adv_reg,
                   help="adversarial regularization strength lambda in local training (Nasr et al. 2018; "
                        "default: off)")
    p.add_argument("--server-lr", type=float, default=d.server_lr, help="(default: %(default)s)")
    p.add_argument("--training", default=d.training, choices=["vmap", "loop"],
                   help="vectorized clients or a per-client loop (default: %(default)s)")
    p.add_argument("--client-batch", type=int, default=d.client_batch, metavar="N",
                   help="vmap: clients trained together (default: sized from the model and the free memory; "
                        "results do not depend on it)")
    p.add_argument("--seed", type=int, default=d.seed, help="(default: %(default)s)")
    p.add_argument("--device", default=d.device, help="torch device (default: %(default)s)")
    p.add_argument("--threads", type=int, default=d.threads, metavar="N",
                   help="torch CPU threads, also the host keystream threads of --secagg masked (default: "
                        "%(default)s; None or 0: the idle cores, i.e. this process's cores minus the last "
                        "minute's load average; OMP_NUM_THREADS in the environment wins)")
    g = p.add_argument_group("differential privacy")
    g.add_argument("--dp", default=d.dp, choices=DP_MODES,
                   help="record: Opacus DP-SGD in each client's local training; user-central: clip each "
                        "update to --dp-clip, Gaussian noise by the server; user-distributed: discrete "
                        "Gaussian shares summed by --secagg quantized|masked. Under user-* each client joins "
                        "a round independently with q = clients-per-round / clients (Poisson cohorts, "
                        "docs/dp.md) (default: off)")
    g.add_argument("--noise-multiplier", type=float, default=d.noise_multiplier,
                   help="z: noise std / sensitivity (give this or --target-epsilon)")
    g.add_argument("--target-epsilon", type=float, default=d.target_epsilon,
                   help="choose z so that the run ends at this epsilon (give this or --noise-multiplier)")
    g.add_argument("--delta", type=float, default=d.delta, help="DP delta (default: %(default)s)")
    g.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm,
                   help="record: per-example gradient clip (default: %(default)s)")
    g.add_argument("--dp-clip", type=float, default=d.dp_clip,
                   help="user-level: L2 clip of each client's update (default: %(default)s; --clip is "
                        "the secagg encoding bound)")
    g.add_argument("--accountant", default=d.accountant, choices=["prv", "rdp"],
                   help="Opacus privacy accountant: prv (tighter) or rdp; result.json reports both, and "
                        "user-distributed is always RDP (docs/dp.md) (default: %(default)s)")
    g.add_argument("--dp-seeded-noise", action="store_true",
                   help="draw the DP noise and the Poisson cohorts from --seed (keyed by round and call, "
                        "the same under every --secagg) for paired runs; the epsilon then does not hold "
                        "against anyone who knows the seed (default: the OS CSPRNG)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help=out_help or "write DIR/result.json (checked writable before training; without --out "
                                    "nothing is saved)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    threshold = args.threshold
    if threshold is not None and float(threshold).is_integer() and threshold >= 1:
        threshold = int(threshold)
    return RunConfig(
        protocol=args.protocol, protocol_args=parse_kv(args.protocol_arg, "--protocol-arg"),
        data_dir=args.data_dir, partition_args=parse_kv(args.partition_arg, "--partition-arg"),
        adv_reg=args.adv_reg, dataset=args.dataset, clients=args.clients, clients_per_round=args.clients_per_round,
        rounds=args.rounds, partition=args.partition, alpha=args.alpha,
        labels_per_client=args.labels_per_client, model=args.model, rule=args.rule,
        rule_args=parse_kv(args.rule_arg, "--rule-arg"), attack=args.attack,
        attack_args=parse_kv(args.attack_arg, "--attack-arg"), corrupt=args.corrupt, secagg=args.secagg, bits=args.bits,
        clip=args.clip, overflow=args.overflow, threshold=threshold, neighbors=args.neighbors, dropout_rate=args.dropout_rate,
        corrupt_fraction=args.corrupt_fraction, dropout_fraction=args.dropout_fraction, on_abort=args.on_abort,
        personalize=args.personalize, client_holdout=args.client_holdout, local_epochs=args.local_epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
        server_lr=args.server_lr, training=args.training, seed=args.seed, device=args.device,
        client_batch=args.client_batch, threads=getattr(args, "threads", None) or None,
        dp=args.dp, noise_multiplier=args.noise_multiplier, target_epsilon=args.target_epsilon, delta=args.delta,
        max_grad_norm=args.max_grad_norm, dp_clip=args.dp_clip, accountant=args.accountant,
        dp_seeded_noise=args.dp_seeded_noise)
