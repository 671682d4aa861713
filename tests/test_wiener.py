"""The pilot-guided Wiener filter (restorer/wiener.py): BM3D's second step without block
matching, checked against a direct per-window implementation and on what it must do."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reason_restore.restorer import wiener


def _scene(h=48, w=56, seed=0):
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(h) / h, torch.arange(w) / w, indexing="ij")
    img = torch.stack([0.5 + 0.3 * torch.sin(12 * x), 0.3 + 0.5 * y,
                       0.5 + 0.2 * torch.cos(9 * (x + y))])[None]
    img[..., 10:30, 20:40] = 0.8
    return img, g


def _direct(noisy, pilot, var, block, stride):
    """Window by window with NumPy: opponent colour, 2-D DCT, Wiener gain, inverse, average
    over the windows covering each pixel weighted per window and channel by the inverse of
    the estimate's variance (reflect padding, as the module does)."""
    opp = wiener._OPPONENT.double().numpy()
    n = np.einsum("ij,jhw->ihw", opp, noisy[0].double().numpy())
    p = np.einsum("ij,jhw->ihw", opp, pilot[0].double().numpy())
    pad = block - 1
    n = np.pad(n, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    p = np.pad(p, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    k = np.arange(block)
    d = np.cos(math.pi * (2 * k[None] + 1) * k[:, None] / (2 * block)) * math.sqrt(2 / block)
    d[0] /= math.sqrt(2)
    num, den = np.zeros_like(n), np.zeros_like(n)
    for c in range(3):
        for i in range(0, n.shape[1] - block + 1, stride):
            for j in range(0, n.shape[2] - block + 1, stride):
                yc = d @ n[c, i:i + block, j:j + block] @ d.T
                pc = d @ p[c, i:i + block, j:j + block] @ d.T
                gain = pc ** 2 / (pc ** 2 + var)
                weight = 1 / ((gain ** 2).sum() * var)
                num[c, i:i + block, j:j + block] += weight * (d.T @ (gain * yc) @ d)
                den[c, i:i + block, j:j + block] += weight  # per colour channel
    h, w = noisy.shape[-2:]
    out = (num / den)[:, pad:pad + h, pad:pad + w]
    return np.einsum("ji,jhw->ihw", opp, out)


@pytest.mark.parametrize("n", [4, 8, 16])
def test_dct_matrix_is_orthonormal(n):
    d = wiener._dct_matrix(n)
    torch.testing.assert_close(d @ d.T, torch.eye(n), atol=1e-5, rtol=0)


def test_separable_transform_is_the_2d_dct_of_each_window():
    d = wiener._dct_matrix(4)
    windows = torch.rand(2, 16, 5)  # [N, n * n, windows], each window row by row
    got = wiener._separable(d, windows)
    for b in range(2):
        for k in range(5):
            x = windows[b, :, k].reshape(4, 4)
            torch.testing.assert_close(got[b, :, k].reshape(4, 4), d @ x @ d.T)


def test_opponent_colour_is_orthonormal_and_inverts():
    torch.testing.assert_close(wiener._OPPONENT @ wiener._OPPONENT.T, torch.eye(3))
    x = torch.rand(2, 3, 5, 7)
    torch.testing.assert_close(wiener._from_opponent(wiener._to_opponent(x)), x)


def test_matches_a_direct_window_by_window_filter():
    clean, g = _scene(24, 20)
    noisy = clean + 0.08 * torch.randn(clean.shape, generator=g)
    pilot = clean + 0.02 * torch.randn(clean.shape, generator=g)
    # A 4-px block keeps the direct loop short; the last window must still meet the edge.
    out, _ = wiener.wiener_filter(noisy, pilot, 0.0064, stride=2, block=4)
    np.testing.assert_allclose(out[0].numpy(), _direct(noisy, pilot, 0.0064, 4, 2), atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_removes_most_of_the_noise_with_a_good_pilot(stride):
    clean, g = _scene()
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g)
    pilot = clean + 0.03 * torch.randn(clean.shape, generator=g)  # a decent restoration
    out, residual = wiener.wiener_filter(noisy, pilot, 0.01, stride=stride)
    mse_in, mse_out = float(((noisy - clean) ** 2).mean()), float(((out - clean) ** 2).mean())
    assert mse_out < mse_in / 8          # sigma 0.1 -> at least 9 dB cleaner
    assert mse_out < float(((pilot - clean) ** 2).mean())  # and better than its pilot
    assert 0 < residual < 0.01


def test_takes_only_the_pilots_energy_not_its_values():
    # A pilot with the right texture energy but the wrong sign keeps the same gains.
    clean, g = _scene()
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g)
    mean = clean.mean()
    a, _ = wiener.wiener_filter(noisy, clean, 0.01)
    b, _ = wiener.wiener_filter(noisy, 2 * mean - clean, 0.01)
    c, _ = wiener.wiener_filter(noisy, torch.full_like(clean, 0.5), 0.01)  # no texture
    err = [float(((v - clean) ** 2).mean()) for v in (a, b, c)]
    assert err[1] < 1.2 * err[0]
    assert err[2] > 2 * err[0]


def test_a_variance_map_matches_a_constant_one():
    clean, g = _scene()
    noisy = clean + 0.05 * torch.randn(clean.shape, generator=g)
    a, ra = wiener.wiener_filter(noisy, clean, 0.0025)
    b, rb = wiener.wiener_filter(noisy, clean, torch.full((1, 1, 48, 56), 0.0025))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert ra == pytest.approx(rb, rel=1e-4)


def test_without_noise_or_room_the_image_comes_back():
    x = torch.rand(1, 3, 20, 20)
    out, residual = wiener.wiener_filter(x, torch.rand_like(x), 0.0)
    assert out is x and residual == 0
    small = torch.rand(1, 3, 5, 30)
    assert wiener.wiener_filter(small, small, 0.01)[0] is small


def test_names_a_mismatched_pilot():
    with pytest.raises(ValueError, match="pilot"):
        wiener.wiener_filter(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 17), 0.01)
    with pytest.raises(ValueError, match="pilot"):
        wiener.wiener_filter(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16), 0.01)


def test_batches_filter_independently():
    clean, g = _scene()
    noisy = torch.cat([clean + 0.1 * torch.randn(clean.shape, generator=g),
                       clean.flip(-1) + 0.05 * torch.randn(clean.shape, generator=g)])
    pilot = torch.cat([clean, clean.flip(-1)])
    both, _ = wiener.wiener_filter(noisy, pilot, F.pad(torch.tensor([0.01, 0.0025]).view(
        2, 1, 1, 1), (0, 0, 0, 0)).expand(2, 1, 48, 56))
    one, _ = wiener.wiener_filter(noisy[1:], pilot[1:], 0.0025)
    torch.testing.assert_close(both[1:], one, atol=1e-5, rtol=0)


def test_a_second_pass_piloted_by_the_first_beats_the_first():
    # A poor pilot (the network's restoration under heavy noise): the first estimate is the
    # better pilot, so the second pass, in larger windows, comes out cleaner still.
    clean, g = _scene(64, 64)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g)
    pilot = clean + 0.06 * torch.randn(clean.shape, generator=g)
    first, _ = wiener.wiener_passes(noisy, pilot, 0.01, passes=wiener.PASSES[:1])
    both, residual = wiener.wiener_passes(noisy, pilot, 0.01)
    direct, _ = wiener.wiener_filter(noisy, pilot.clamp(0, 1), 0.01)
    torch.testing.assert_close(first, direct)  # one pass is the plain filter
    mse = [float(((v - clean) ** 2).mean()) for v in (first, both)]
    assert mse[1] < 0.9 * mse[0]
    assert 0 < residual < 0.01


def test_passes_whose_window_does_not_fit_keep_the_estimate_so_far():
    # 12 px: the 8 x 8 passes run, the 16 x 16 one cannot (alone it returns the noisy input).
    clean, g = _scene(12, 12)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g)
    pilot = clean + 0.03 * torch.randn(clean.shape, generator=g)
    out, _ = wiener.wiener_passes(noisy, pilot, 0.01)
    fitting = tuple(p for p in wiener.PASSES if p[0] <= 12)
    assert 0 < len(fitting) < len(wiener.PASSES)
    torch.testing.assert_close(out, wiener.wiener_passes(noisy, pilot, 0.01, passes=fitting)[0])
    assert float(((out - clean) ** 2).mean()) < float(((noisy - clean) ** 2).mean()) / 4
