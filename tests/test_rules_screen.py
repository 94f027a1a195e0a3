"""Krum, multi-Krum and Bulyan's selection through the float32 screen (protocols.rules.screen).

(a) The enclosures: lo <= ||x_i - x_j||^2 <= hi in exact arithmetic (Python integers on the
    floats' exact values) for the screen (level 1) and the float64 Gram rows (level 2).
(b) ``krum_select`` = a plain reference: float64 differences, k = r - f - 2 smallest distances
    to the others, stable sort (ties: lowest index), for m = 1 and m > 1.
(c) ``iterated_selection`` = the reference loop of Bulyan's selection.
(d) the public Krum, multi-Krum and Bulyan rules = the reference choices, bit for bit.
On adversarial inputs: a large shared offset with a tiny spread, near-ties in the 7th to 12th
significant digit, exact ties (identical updates, mirror-symmetric sets), two clusters, a few
huge outliers, magnitudes near float32's limits, float32 and float64, d in {1, 3} and not a
multiple of the screen's block, n = 1..4, f up to its maximum and beyond.

Where two clients' float64 scores are exactly equal the data make them equal in any summation
order (integers, or a set symmetric under a sign flip), so the reference's float64 arithmetic
and the rule's agree on them.
"""
import random
from fractions import Fraction

import pytest
import torch

from protocols.rules import make_rule
from protocols.rules import screen as scr
from protocols.rules.common import closest_to_median_mean
from protocols.rules.krum import iterated_selection, krum_max_f, krum_select
from protocols.rules.screen import DistanceBounds, float64_gram_rows, float64_rows, screen
from secagg import ClientUpdates

DTYPES = (torch.float32, torch.float64)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: on a busy machine every intra-op thread wake-up costs more than the work
    (a 6 x 17 Krum took 50 ms with two threads, 0.4 ms with one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- references


def exact_d2(x: torch.Tensor):
    """Exact squared distances as (integer matrix D, integer Q2): ||x_i - x_j||^2 = D_ij / Q2."""
    ratios = [[v.as_integer_ratio() for v in row] for row in x.double().tolist()]
    q = max(b for row in ratios for _, b in row)
    ints = [[a * (q // b) for a, b in row] for row in ratios]
    n = len(ints)
    d = [[0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            d[i][j] = d[j][i] = sum((a - b) * (a - b) for a, b in zip(ints[i], ints[j]))
    return d, q * q


def assert_encloses(lo: torch.Tensor, hi: torch.Tensor, exact, rows=None, what=""):
    d, q2 = exact
    rows = range(len(d)) if rows is None else rows
    lo, hi = lo.tolist(), hi.tolist()
    for t, i in enumerate(rows):
        for j in range(len(d)):
            assert lo[t][j] >= 0 and Fraction(lo[t][j]) * q2 <= d[i][j], (what, i, j, lo[t][j], d[i][j] / q2)
            assert hi[t][j] == float("inf") or Fraction(hi[t][j]) * q2 >= d[i][j], (what, i, j, hi[t][j], d[i][j] / q2)


def ref_d2(x: torch.Tensor) -> list:
    x = x.double()
    return ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1).tolist()


def ref_krum(d2: list, members, f: int, m: int = 1) -> list:
    """The m members with the lowest Krum scores (sum of the k = r - f - 2 smallest distances
    to the other members), ties by lowest index; ascending."""
    idx = list(members)
    r = len(idx)
    k = min(max(r - f - 2, 0), r - 1)
    scores = [sum(sorted(d2[i][j] for j in idx if j != i)[:k]) for i in idx]
    order = sorted(range(r), key=lambda t: (scores[t], t))
    return sorted(idx[t] for t in order[:m])


def ref_iterated(d2: list, f: int, theta: int) -> list:
    remaining, chosen = list(range(len(d2))), []
    for _ in range(theta):
        pick = ref_krum(d2, remaining, f)[0]
        chosen.append(pick)
        remaining.remove(pick)
    return chosen


# ----------------------------------------------------------------------------- inputs


def mirror_set(n: int, d: int, rel: float, g: torch.Generator) -> torch.Tensor:
    """n points symmetric under x -> x with coordinate 0 negated, clients 2i and 2i+1 mirror
    images (a central pair at 0, 1: their Krum scores tie exactly), then client 1 moved by
    ``rel`` of the spread: the two scores differ by about ``rel`` relative."""
    pairs = torch.randn(n // 2, d, generator=g, dtype=torch.float64)
    pairs[0] *= 0.05
    pairs[:, 0] = pairs[:, 0].abs() + 0.1
    x = torch.empty(n, d, dtype=torch.float64)
    x[0:2 * (n // 2):2] = pairs
    x[1:2 * (n // 2):2] = pairs
    x[1:2 * (n // 2):2, 0] *= -1
    if n % 2:
        x[-1] = torch.randn(d, generator=g, dtype=torch.float64)
        x[-1, 0] = 0.0
    if rel:
        x[1, 1 % d] += rel * (1 if torch.rand((), generator=g) < 0.5 else -1)
    return x


def cases(seed: int):
    """(name, x) for one seed: every input kind, float32 and float64, small and odd d."""
    g = torch.Generator().manual_seed(seed)
    rnd = random.Random(seed)
    n = rnd.choice([5, 6, 7, 9, 12])
    d = rnd.choice([1, 3, 17, 257, 300])
    out = []
    for dtype in DTYPES:
        noise = torch.randn(n, d, generator=g, dtype=torch.float64)
        out.append(("normal", noise.to(dtype)))
        for off in (1e6, 1e7, 1e8):
            out.append((f"offset {off:g}", (off + rnd.choice([1e-3, 1e-1, 1.0]) * noise).to(dtype)))
        rel = rnd.choice([1e-7, 1e-9, 1e-12])
        out.append((f"mirror tie rel={rel:g}", mirror_set(n, d, rel, g).to(dtype)))
        out.append(("mirror exact tie", mirror_set(n, d, 0.0, g).to(dtype)))
        out.append(("mirror tie offset", (1e6 + mirror_set(n, d, 0.0, g)).to(dtype)))
        same = noise.clone()
        same[1:4] = same[0] * 0.01                                   # identical central updates
        out.append(("identical", same.to(dtype)))
        out.append(("all identical", noise[:1].expand(n, d).clone().to(dtype)))
        ints = torch.randint(-2, 3, (n, d), generator=g).double()   # exact ties in float64
        out.append(("integers", ints.to(dtype)))
        two = noise * 0.1
        two[n // 2 + 1:] += 10.0                                     # two clusters
        out.append(("two clusters", two.to(dtype)))
        far = noise.clone()
        far[:2] *= 1e6                                               # a few huge outliers
        out.append(("outliers", far.to(dtype)))
        out.append(("small", (noise * 1e-30).to(dtype)))
        out.append(("large", (noise * 1e30).to(dtype)))
    sub = noise * 2.0 ** -140                                        # below float32's normals,
    sub[0] *= 2.0 ** 30                                              # one far client sets the scale
    out.append(("float32 subnormal range", sub))
    out.append(("float32 overflow range", noise * 1e39))
    out.append(("squares underflow in float64", noise * 2.0 ** -1000))
    return out


def f_values(n: int):
    top = krum_max_f(n)
    return sorted({0, top // 2, top, top + 1, n})


# ----------------------------------------------------------------------------- (a) enclosures


@pytest.mark.parametrize("seed", range(6))
def test_the_screen_and_the_float64_gram_rows_enclose_the_exact_distances(seed):
    for name, x in cases(seed):
        exact = exact_d2(x)
        est, lo, hi = screen(x)
        assert_encloses(lo, hi, exact, what=f"screen {name} {x.dtype}")
        centre = scr.centre_weights(x).nonzero().flatten()
        rows = torch.tensor([0, x.shape[0] - 1])
        _, lo2, hi2 = float64_gram_rows(x, rows, centre)
        assert_encloses(lo2, hi2, exact, rows=rows.tolist(), what=f"gram rows {name} {x.dtype}")
        _, lo3, hi3 = float64_gram_rows(x, torch.arange(x.shape[0]), centre)
        assert_encloses(lo3, hi3, exact, what=f"gram all {name} {x.dtype}")


@pytest.mark.parametrize("n, d, dtype", [(6, 20000, torch.float32), (5, 9000, torch.float64),
                                         (70, 5, torch.float32), (3, 1, torch.float64)])
def test_enclosures_across_blocks_and_tiles(n, d, dtype):
    """d over the screen's chunk (8,192) and the level-2 block (16,384); n over a row tile (64)."""
    g = torch.Generator().manual_seed(n * d)
    x = (1e4 + torch.randn(n, d, generator=g, dtype=torch.float64)).to(dtype)
    x[0] += 50.0
    if n > 3:
        x[2] = x[1]
    exact = exact_d2(x)
    _, lo, hi = screen(x)
    assert_encloses(lo, hi, exact, what="screen")
    b = DistanceBounds(x)
    b.refine(range(n))
    assert_encloses(b.lo, b.hi, exact, what="refined")
    assert (b.hi - b.lo <= 1e-9 * b.hi.max()).all()               # level 2 is tight here


def test_enclosure_under_systematic_rounding():
    """Rows of 1 + a few ulps against a centre at 0: every float32 product and partial sum
    rounds the same way, the case that comes nearest the worst-case bound (about 3% of it,
    random data about 0.3%)."""
    g = torch.Generator().manual_seed(0)
    d = 4096
    x = torch.cat([torch.zeros(6, d),
                   1 + 2.0 ** -22 * torch.randint(0, 4, (3, d), generator=g).float(),
                   3 + 2.0 ** -21 * torch.randint(0, 4, (2, d), generator=g).float()])
    _, lo, hi = screen(x)
    assert_encloses(lo, hi, exact_d2(x))


def test_reduced_precision_float32_products_switch_the_screen_to_float64():
    """With TF32/bf16 matmuls allowed a float32 product may be rounded to fewer bits than the
    bound assumes: the screen then computes in float64."""
    g = torch.Generator().manual_seed(2)
    x = 1e3 + torch.randn(9, 300, generator=g)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        assert scr._compute_dtype(x) == torch.float64
        _, lo, hi = screen(x)
        assert_encloses(lo, hi, exact_d2(x))
        assert krum_select(x, 3, 4).tolist() == ref_krum(ref_d2(x), range(9), 3, 4)
    finally:
        torch.set_float32_matmul_precision(before)


def test_other_dtypes_and_layouts():
    g = torch.Generator().manual_seed(4)
    big = torch.randn(11, 600, generator=g)
    for x in (big[:, ::3], big.T.contiguous().T, big.to(torch.bfloat16), big.to(torch.float16),
              big[:, :1].expand(11, 40)):
        for f, m in ((0, 1), (4, 1), (4, 5), (8, 3)):
            assert krum_select(x, f, m).tolist() == ref_krum(ref_d2(x), range(11), f, m), (x.dtype, x.stride())


def test_float64_rows_are_the_float64_differences_symmetric_and_shared_by_twins():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 5000, generator=g)
    x[5] = x[2]
    rows = float64_rows(x, [2, 5, 0, 7])
    ref = torch.tensor(ref_d2(x), dtype=torch.float64)
    assert torch.allclose(rows, ref[[2, 5, 0, 7]], rtol=1e-12, atol=0)
    assert torch.equal(rows[0], rows[1])                          # twins: the same values
    assert rows[2, 7] == rows[3, 0] and rows[0, 0] == rows[2, 2] # (c, j) == (j, c) bit for bit
    assert rows[0, 2] == 0 and rows[0, 5] == 0


# ----------------------------------------------------------------------------- (b), (c), (d)


@pytest.mark.parametrize("seed", range(12))
def test_krum_select_equals_the_float64_reference(seed):
    for name, x in cases(seed):
        n = x.shape[0]
        d2 = ref_d2(x)
        for f in f_values(n):
            for m in sorted({1, 2, n // 2, n - f, n} & set(range(1, n + 1))):
                got = krum_select(x, f, m).tolist()
                assert got == ref_krum(d2, range(n), f, m), (name, x.dtype, n, f, m)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_krum_select_with_the_fewest_clients(n):
    for dtype in DTYPES:
        for x in (torch.randn(n, 3, dtype=dtype), torch.zeros(n, 1, dtype=dtype),
                  torch.arange(n, dtype=dtype)[:, None].flip(0)):
            for f in range(0, n + 1):
                for m in range(1, n + 1):
                    assert krum_select(x, f, m).tolist() == ref_krum(ref_d2(x), range(n), f, m)


@pytest.mark.parametrize("seed", range(8))
def test_iterated_selection_equals_the_reference_loop(seed):
    for name, x in cases(seed):
        n = x.shape[0]
        d2 = ref_d2(x)
        for f in sorted({0, max(0, (n - 3) // 4), krum_max_f(n)}):
            theta = max(1, n - 2 * f)
            got = iterated_selection(x, f, theta).tolist()
            assert got == ref_iterated(d2, f, theta), (name, x.dtype, n, f)


def plain(x):
    return ClientUpdates(x, secure=False, rule="test")


@pytest.mark.parametrize("seed", range(6))
def test_the_rules_return_what_the_reference_choices_give(seed):
    for name, x in cases(seed):
        n = x.shape[0]
        d2 = ref_d2(x)
        if not torch.isfinite(x).all():
            continue
        f = krum_max_f(n)
        assert torch.equal(make_rule("krum", f=f)(plain(x)), x[ref_krum(d2, range(n), f)[0]])
        for m in (1, n - f, n):
            w = torch.zeros(n, dtype=x.dtype)
            w[ref_krum(d2, range(n), f, m)] = 1.0 / m
            assert torch.equal(make_rule("multikrum", f=f, m=m)(plain(x)), w @ x), (name, m)
        fb = (n - 3) // 4
        theta = n - 2 * fb
        want = closest_to_median_mean(x[ref_iterated(d2, fb, theta)], theta - 2 * fb)
        assert torch.equal(make_rule("bulyan", f=fb)(plain(x)), want), name


def test_near_ties_in_every_significant_digit_from_the_7th_to_the_12th():
    """Two central clients whose scores differ by rel = 1e-7 .. 1e-12: the lower one wins,
    whichever of the two it is, at n = 100 (several row tiles) and d = 1,000."""
    g = torch.Generator().manual_seed(5)
    for rel in (1e-7, 1e-8, 1e-9, 1e-10, 1e-11, 1e-12):
        for offset in (0.0, 1e6):
            x = offset + mirror_set(100, 1000, rel, g)
            d2 = ref_d2(x)
            want = ref_krum(d2, range(100), 48)
            assert want[0] in (0, 1)
            assert krum_select(x, 48).tolist() == want, (rel, offset)
            assert krum_select(x, 10, 30).tolist() == ref_krum(d2, range(100), 10, 30)


def test_krum_agrees_with_byzfl():
    """ByzFL's Krum averages the n - f - 1 nearest distances (self included at 0): its f + 1
    is our f. Continuous float64 data, so that no two scores are close."""
    from protocols.bench.rules import load_byzfl
    bz, why = load_byzfl()
    if bz is None:
        pytest.skip(why)
    import importlib.util
    assert importlib.util.find_spec("byzfl") is not None      # the bench report's peer check
    g = torch.Generator().manual_seed(3)
    for n, d, f in ((10, 50, 3), (25, 200, 11), (40, 1000, 5)):
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        x[: f] += 5 * torch.randn(f, d, generator=g, dtype=torch.float64)
        ours = make_rule("krum", f=f)(plain(x))
        assert torch.equal(ours, x[ref_krum(ref_d2(x), range(n), f)[0]])
        # numpy in, numpy out (a torch tensor would be cast to float32 by ByzFL)
        assert (bz.Krum(f=f + 1)(x.numpy()) == ours.numpy()).all()


def test_many_clients_with_ties_across_row_tiles():
    """n over two row tiles of the screen (64 rows), small-integer updates: exact ties everywhere."""
    g = torch.Generator().manual_seed(6)
    for n in (70, 130):
        x = torch.randint(-1, 2, (n, 7), generator=g).float()
        d2 = ref_d2(x)
        for f, m in ((krum_max_f(n), 1), (10, 1), (10, n // 2), (0, n - 1)):
            assert krum_select(x, f, m).tolist() == ref_krum(d2, range(n), f, m), (n, f, m)
    x = torch.randint(-1, 2, (70, 7), generator=g).double()
    assert iterated_selection(x, 16, 38).tolist() == ref_iterated(ref_d2(x), 16, 38)
