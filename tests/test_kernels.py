"""Each Numba kernel equals its plain-NumPy twin, in float32 and float64."""
import numba
import numpy as np
import pytest

from nanoagent import kernels

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-6, np.float64: 1e-13}


def rand(rng, *shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rmsnorm(dtype):
    rng = np.random.default_rng(0)
    x, w = rand(rng, 7, 33, dtype=dtype) * 3, rand(rng, 33, dtype=dtype)
    y, rstd = kernels.rmsnorm(x, w, 1e-5)
    y_ref, rstd_ref = kernels.rmsnorm_ref(x, w, 1e-5)
    assert y.dtype == dtype and rstd.dtype == dtype
    np.testing.assert_allclose(y, y_ref, rtol=TOL[dtype], atol=TOL[dtype])
    np.testing.assert_allclose(rstd, rstd_ref, rtol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_rope(dtype):
    rng = np.random.default_rng(1)
    x = rand(rng, 6, 5, 16, dtype=dtype)
    ang = rng.uniform(-10, 10, (5, 8))
    cos, sin = np.cos(ang).astype(dtype), np.sin(ang).astype(dtype)
    np.testing.assert_allclose(kernels.rope(x, cos, sin), kernels.rope_ref(x, cos, sin),
                               rtol=TOL[dtype], atol=TOL[dtype])


def test_rope_is_a_rotation():
    """Each (i, i + D/2) pair keeps its length."""
    rng = np.random.default_rng(2)
    x, ang = rand(rng, 3, 4, 8), rng.uniform(-5, 5, (4, 4))
    y = kernels.rope(x, np.cos(ang), np.sin(ang))
    norm = lambda a: a[..., :4] ** 2 + a[..., 4:] ** 2
    np.testing.assert_allclose(norm(y), norm(x), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T,S", [(5, 5), (3, 9), (1, 4)])
def test_causal_softmax(dtype, T, S):
    rng = np.random.default_rng(3)
    x = rand(rng, 4, T, S, dtype=dtype) * 4
    p = kernels.causal_softmax(x, 0.25, S - T)
    np.testing.assert_allclose(p, kernels.causal_softmax_ref(x, 0.25, S - T), rtol=TOL[dtype], atol=TOL[dtype])
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=TOL[dtype])
    assert np.all(np.triu(p[0], k=S - T + 1) == 0), "a query saw a later key"


@numba.njit
def exps(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = kernels.exp(x[i])
    return out


def test_exp_in_the_kernels():
    """float32: within 1.5e-7 of e^x over the whole float32 range (measured: 9.6e-8), and only a tiny
    or a huge finite number beyond it; float64: math.exp itself."""
    x = np.linspace(-87, 88, 200_001).astype(np.float32)
    got, exact = exps(x), np.exp(x.astype(np.float64))
    assert got.dtype == np.float32 and np.max(np.abs(got - exact) / exact) < 1.5e-7
    far = exps(np.array([-1e4, -200, 200, 1e4], np.float32))
    assert far[0] < 1e-37 and far[1] < 1e-37 and np.isfinite(far[2:]).all() and far[2] > 1e38
    x64 = np.linspace(-700, 700, 1001)
    np.testing.assert_allclose(exps(x64), np.exp(x64), rtol=4e-16)  # C's exp and NumPy's, to the last bit


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M", [1, 2, 3, 4, 5, 8, 11])  # one row, tiles of four rows, and the rows left over
@pytest.mark.parametrize("N,K", [(12, 33), (7, 5), (1, 64)])  # tiles of four weight rows, and the rows left over
def test_matmul_rows(dtype, M, N, K):
    rng = np.random.default_rng(7)
    x, w = rand(rng, M, K, dtype=dtype), rand(rng, N, K, dtype=dtype)
    y = kernels.matmul_rows(x, w)
    assert y.shape == (M, N) and y.dtype == dtype
    exact = x.astype(np.float64) @ w.T.astype(np.float64)  # the sums reassociate: compare with the exact product
    np.testing.assert_allclose(y, exact, rtol=TOL[dtype] * 5, atol=TOL[dtype] * 5)
    np.testing.assert_allclose(kernels.matmul_rows_ref(x, w), exact, rtol=TOL[dtype] * 5, atol=TOL[dtype] * 5)


def test_matmul_rows_gives_each_row_what_it_gets_alone():
    """A row's product does not depend on the rows beside it in a tile (bit for bit is not asked:
    a tiled row and a lone row may sum in another order), in float64 to rounding."""
    rng = np.random.default_rng(8)
    x, w = rand(rng, 9, 40), rand(rng, 10, 40)
    together = kernels.matmul_rows(x, w)
    for m in range(9):
        np.testing.assert_allclose(together[m], kernels.matmul_rows(x[m:m + 1], w)[0], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_gate(dtype):
    rng = np.random.default_rng(4)
    g, u = rand(rng, 3, 4, 10, dtype=dtype) * 5, rand(rng, 3, 4, 10, dtype=dtype)
    np.testing.assert_allclose(kernels.silu_gate(g, u), kernels.silu_gate_ref(g, u), rtol=TOL[dtype], atol=TOL[dtype])


@numba.njit
def _round_trip(x, bits, back):
    for i in range(x.shape[0]):
        bits[i] = kernels.narrow(x[i], bits)
        back[i] = kernels.widen(bits[i])


def test_float16_cache_elements_round_as_numpy_does():
    """narrow: float32 -> the nearest float16 (ties to even, subnormals, overflow to inf); widen: back, exactly."""
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.normal(size=2000) * 10.0 ** rng.integers(-9, 6, 2000),
                        [0.0, -0.0, 1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 6e-8, 70000.0, -1e-30]]).astype(np.float32)
    bits, back = np.empty(x.size, np.uint16), np.empty(x.size, np.float32)
    _round_trip(x, bits, back)
    with np.errstate(over="ignore"):  # 70000 and the largest draws become inf, on both sides
        half = x.astype(np.float16)
    np.testing.assert_array_equal(bits, half.view(np.uint16))
    np.testing.assert_array_equal(back, half.astype(np.float32))


@pytest.mark.parametrize("D,n", [(8, 7), (8, 150)])
def test_attend_cache_reads_a_float16_cache(D, n):
    rng = np.random.default_rng(6)
    H, KV, Tmax = 6, 2, n + 5
    q = rand(rng, H, D, dtype=np.float32)
    kt, v = rand(rng, KV, D, Tmax, dtype=np.float16), rand(rng, KV, Tmax, D, dtype=np.float16)
    out, probs = kernels.attend_cache(q, kt, v, n)
    out_ref, probs_ref = kernels.attend_cache_ref(q, kt.astype(np.float32), v.astype(np.float32), n)
    np.testing.assert_allclose(out, out_ref, rtol=2e-5, atol=2e-5)
    rows = kernels.attend_rows(q[None], kt[None], v[None], [0], [n])
    np.testing.assert_allclose(rows[0], out_ref, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D,n", [(8, 7), (6, 9), (16, 1), (8, 150)])  # fours of rows and keys, the rest, a long cache
def test_attend_cache(dtype, D, n):
    rng = np.random.default_rng(5)
    H, KV, Tmax = 6, 2, n + 5
    q, kt, v = rand(rng, H, D, dtype=dtype), rand(rng, KV, D, Tmax, dtype=dtype), rand(rng, KV, Tmax, D, dtype=dtype)
    kt[..., n:], v[:, n:] = 1e9, 1e9  # positions past the cache length must not be read
    out, probs = kernels.attend_cache(q, kt, v, n)
    out_ref, probs_ref = kernels.attend_cache_ref(q, kt, v, n)
    np.testing.assert_allclose(out, out_ref, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    np.testing.assert_allclose(probs, probs_ref, rtol=TOL[dtype] * 10, atol=TOL[dtype])
