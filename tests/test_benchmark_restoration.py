"""The restoration benchmark (benchmarks/restoration.py) and its classical baselines
(benchmarks/classical.py): metric code against known values, each classical method on its own
degradation (tiny images), the verdict logic, and the benchmark end to end on a fake cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _bench import ROOT, heldout_cache, load_benchmark

bench = load_benchmark("restoration.py", "rr_bench_restoration")
classical = bench.classical

from reason_restore.reasoner.synthesis import Step, degrade  # noqa: E402


def scene(size: int = 48) -> np.ndarray:
    """A small colourful picture with edges, gradients and dark pixels in every region (so the
    dark channel prior holds), float32 in [0, 1]."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.stack([0.5 + 0.45 * np.sin(9 * x + 2 * y),
                    0.5 + 0.45 * np.cos(7 * y - 3 * x),
                    0.15 + 0.7 * ((x > 0.5) ^ (y > 0.35))], 2)
    img[size // 4: size // 2, size // 5: size // 2] = (0.9, 0.2, 0.05)  # a saturated block
    return np.clip(img, 0, 1).astype(np.float32)


def gain(method, step: Step, seed: int = 0, size: int = 48) -> float:
    """PSNR improvement (dB) of ``method(degraded, params)`` over the degraded image."""
    clean = scene(size)
    img, _ = degrade(clean, [step], seed=seed)
    img = bench.quantise(img)
    return bench.psnr(method(img, step.params), clean) - bench.psnr(img, clean)


# --- metrics --------------------------------------------------------------------------------

def test_psnr_known_values():
    rng = np.random.default_rng(0)
    x = (rng.random((16, 16, 3)) * 0.8).astype(np.float64)
    assert bench.psnr(x + 0.1, x) == pytest.approx(20.0, abs=1e-9)  # MSE 0.01 -> 20 dB
    assert math.isinf(bench.psnr(x, x))
    y = x.copy()
    y[:8] += 0.5  # half the pixels off by 0.5: MSE 0.125
    assert bench.psnr(y, x) == pytest.approx(10 * math.log10(8.0), abs=1e-9)


def test_ssim_identical_is_one_and_orders_corruption():
    rng = np.random.default_rng(1)
    x = rng.random((32, 32, 3)).astype(np.float32)
    assert bench.ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    light = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1)
    heavy = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1)
    assert 1.0 > bench.ssim(light, x) > bench.ssim(heavy, x) > 0.0


def test_ssim_matches_scikit_image_on_luma():
    """Ours is Wang et al.'s SSIM on the BT.601 luma; scikit-image with the Gaussian window,
    population covariance and data range 1 on the same luma is the same definition (its
    border crop equals our 'valid' filtering), so they agree to rounding."""
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(2)
    a = rng.random((40, 48, 3))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)

    def luma(img):
        return (16 + 65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255
    ref = metrics.structural_similarity(luma(b), luma(a), data_range=1.0, gaussian_weights=True,
                                        sigma=1.5, use_sample_covariance=False)
    assert bench.ssim(b, a) == pytest.approx(ref, abs=1e-9)
    # Per-channel RGB SSIM is a different (common) definition: close here, not equal.
    rgb = metrics.structural_similarity(b, a, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, channel_axis=2)
    assert bench.ssim(b, a) == pytest.approx(rgb, abs=0.1)


def test_quantise_rounds_to_8_bits():
    x = np.array([[[0.0, 0.5, 1.0], [0.1, 1.2, -0.3]]], np.float32)
    q = bench.quantise(x)
    assert q.dtype == np.float32
    np.testing.assert_allclose(q * 255, np.round(q * 255), atol=1e-4)
    np.testing.assert_allclose(q, [[[0, 128 / 255, 1], [26 / 255, 1, 0]]], atol=1e-6)


def test_effective_sigma():
    flat = np.full((4, 4, 3), 0.25, np.float32)
    assert classical.effective_sigma(25.0, 0.0, flat) == pytest.approx(25.0)
    # variance sigma^2 + shot^2 * mean: 9 + 16 * 0.25 * ... -> sqrt(3^2 + 4^2 / 4) = sqrt(13)
    assert classical.effective_sigma(3.0, 4.0, flat) == pytest.approx(math.sqrt(13.0))


# --- classical methods, each on its own degradation -----------------------------------------

def test_denoisers_improve_gaussian_noise_sigma_25():
    pytest.importorskip("bm3d")
    pytest.importorskip("cv2")
    step = Step("noise", {"sigma": 25.0, "shot": 0.0})
    for m in classical.METHODS["noise"]:  # BM3D, OpenCV NLM
        assert gain(m.run, step) > 1.5, m.name  # BM3D ~10 dB, NLM ~2.5 dB here


def test_deconvolution_improves_blur():
    pytest.importorskip("skimage")
    step = Step("blur", {"width": 1.2, "motion_length": 4.0, "motion_angle": 0.0})
    for m in classical.METHODS["blur"]:  # Wiener, Richardson-Lucy
        assert gain(m.run, step) > 0.4, m.name  # Wiener ~0.85 dB, RL ~1.9 dB here


def test_dark_channel_prior_improves_haze():
    pytest.importorskip("cv2")
    step = Step("haze", {"beta": 1.5, "airlight": 0.9})
    assert gain(classical.method("haze").run, step) > 2.0
    # without the oracle airlight (estimated as in the paper) it still helps
    assert gain(lambda x, p: classical.dark_channel_dehaze(x), step) > 1.0


def test_low_light_inverse_curve_and_clahe():
    pytest.importorskip("cv2")
    step = Step("low_light", {"exposure": 0.3, "gamma": 1.8})
    assert gain(classical.method("low_light", "gamma (true curve)").run, step) > 15.0
    assert gain(classical.method("low_light", "CLAHE").run, step) > 0.5


def test_nlm_reduces_jpeg_artefacts():
    pytest.importorskip("cv2")
    assert gain(classical.method("jpeg").run, Step("jpeg", {"quality": 10.0}), size=64) > 0.1


def test_directional_median_removes_rain():
    pytest.importorskip("scipy")
    step = Step("rain", {"density": 0.02, "length": 20.0, "angle": 20.0})
    assert gain(classical.method("rain").run, step) > 0.3  # ~0.6 dB on this busy pattern


def test_line_footprint_is_a_line_at_the_angle():
    fp = classical.line_footprint(7, 0.0)
    assert fp[3].all() and fp.sum() == 7  # horizontal
    fp = classical.line_footprint(7, 90.0)
    assert fp[:, 3].all() and fp.sum() == 7  # vertical


def test_bicubic_from_lr_image_is_the_synthesised_input():
    pytest.importorskip("cv2")
    clean = scene(48)
    img, _ = degrade(clean, [Step("low_resolution", {"scale": 2.0})])
    small = classical.downsample_like_synthesis(clean, 2.0)
    assert small.shape == (24, 24, 3)
    # The same interpolation as the synthesiser's torch bicubic, up to implementation details.
    assert bench.psnr(classical.bicubic_upscale(small, (48, 48)), img) > 40.0
    np.testing.assert_array_equal(classical.bicubic_identity(img), img)


def test_chain_undoes_a_mixture_in_reverse_formation_order():
    pytest.importorskip("cv2")
    pytest.importorskip("bm3d")
    steps = [Step("low_light", {"exposure": 0.5, "gamma": 1.5}),
             Step("noise", {"sigma": 10.0, "shot": 0.0})]
    clean = scene(48)
    img, _ = degrade(clean, steps, seed=3)
    out = classical.chain(img, steps)
    assert bench.psnr(out, clean) > bench.psnr(img, clean) + 5.0
    case = bench.heldout.mixture_cases([("low_light", "noise")])[0]
    assert bench.chain_name(case) == "chain: BM3D -> gamma (true curve)"
    names = [n for n, _ in bench.candidates(case, clean)]
    assert names == ["chain: BM3D -> gamma (true curve)", "gamma (true curve) alone",
                     "BM3D alone"]
    with pytest.raises(KeyError, match="no classical method"):
        classical.method("noise", "nonexistent")


# --- cases and verdicts ---------------------------------------------------------------------

def test_cases_cover_every_type_level_mixture_and_sigma_25():
    cases = bench.select_cases()
    assert len(cases) == 7 * 3 + len(bench.heldout.MIXTURES) + 1
    assert cases[-1] is bench.SIGMA25
    assert [c.name for c in bench.select_cases(["noise/", "sigma 25"])] == [
        "noise/mild", "noise/moderate", "noise/severe", "noise sigma 25 (Gaussian)"]


def _row(case, **psnr_and_seconds):
    row = bench.Row(case)
    for key, (p, s) in psnr_and_seconds.items():
        score = row.score(key.replace("_", " "))
        score.psnr.append(p)
        score.ssim.append(0.9)
        score.seconds.append(s)
        score.severity.append(0.1)
        if key not in ("input", "ours"):
            row.classical.append(key.replace("_", " "))
    return row


def test_verdicts_say_met_or_by_how_much():
    noise = bench.select_cases(["noise/mild"])[0]
    blur = bench.select_cases(["blur/mild"])[0]
    rows = [_row(noise, input=(20, math.nan), ours=(30, 1.0), BM3D=(29, 20.0),
                 OpenCV_NLM=(28.5, 0.5)),
            _row(blur, input=(25, math.nan), ours=(26, 1.0), Wiener=(27.25, 0.1))]
    assert rows[0].best_classical() == "BM3D"
    lines = bench.verdicts(rows)
    assert "**missed** on 1 of 2 rows: blur/mild by 1.25 dB (vs Wiener)" in lines[0]
    rows[1].scores["ours"].psnr[0] = 28.0
    assert "**met** (2 of 2 rows)" in bench.verdicts(rows)[0]
    sigma = _row(bench.SIGMA25, input=(20, math.nan), ours=(30.0, 0.5), BM3D=(30.5, 10.0))
    line = bench.verdicts(rows + [sigma])[1]
    assert "missed by 0.50 dB" in line and "20.0x faster" in line
    assert "missed: 20.0x, 1.5x short" in line


def test_verdict_without_the_exact_inverse_tone_curve():
    dark = bench.select_cases(["low_light/mild"])[0]
    row = _row(dark, input=(20, math.nan), ours=(25, 1.0), gamma_true_curve=(50, 0.01),
               CLAHE=(21.5, 0.01))
    row.scores["gamma (true curve)"] = row.scores.pop("gamma true curve")
    row.classical[0] = "gamma (true curve)"
    lines = bench.verdicts([row])
    assert "low_light/mild by 25.00 dB (vs gamma (true curve))" in lines[0]
    assert "low_light/mild +3.50 dB (vs CLAHE)" in lines[1]


def test_figure_crop_picks_the_detailed_window():
    clean = np.full((64, 64, 3), 0.5, np.float32)
    clean[40:, 40:] = np.random.default_rng(0).random((24, 24, 3))  # detail bottom right
    assert bench.detail_box(clean, 24) == (40, 40, 24)
    assert bench.detail_box(clean[:16, :16], 24) == (0, 0, 16)  # smaller than a tile


# --- end to end -----------------------------------------------------------------------------

@pytest.fixture
def fake_cache(tmp_path, monkeypatch):
    return heldout_cache(tmp_path, [np.clip(scene(80) * (0.8 + 0.1 * i), 0, 1) * 255
                                    for i in range(2)], monkeypatch)


def test_main_writes_the_table(fake_cache, tmp_path, capsys):
    for name in ("bm3d", "cv2", "skimage", "scipy"):
        pytest.importorskip(name)
    restorer = ROOT / "restorer" / "weights" / "restorer.safetensors"
    analyzer = ROOT / "reasoner" / "weights" / "analyzer.safetensors"
    if not (restorer.is_file() and analyzer.is_file()):
        pytest.skip("shipped weights not present")
    out, fig = tmp_path / "r.md", tmp_path / "fig.jpg"
    assert bench.main(["--photos", "1", "--size", "64", "--cases", "noise/mild",
                       "jpeg/moderate", "--out", str(out), "--figure", str(fig),
                       "--ablation", f"again={restorer}"]) == 0
    text = out.read_text()
    assert text in capsys.readouterr().out  # printed and written alike
    assert "| case | input PSNR | ours PSNR (predicted diag.) | ours PSNR (true diag.) | " \
           "best classical (true params) |" in text
    assert "| noise/mild |" in text and "| jpeg/moderate |" in text
    assert "1 held-out photos (source `mate`), centre 64x64 crops" in text
    assert "- Ours beats the best classical method" in text
    # the same weights twice give the same ablation numbers
    main_line = next(l for l in text.splitlines() if l.startswith("| main |"))
    again_line = next(l for l in text.splitlines() if l.startswith("| again |"))
    assert main_line.split("|")[3:] == again_line.split("|")[3:]
    # the file cell names the weights by file name and hash, not by a machine's path
    from reason_restore.tools.data import sha256_file
    cell = f"`restorer.safetensors` (sha256 {sha256_file(restorer)[:12]})"
    assert main_line.split("|")[2].strip() == again_line.split("|")[2].strip() == cell
    from PIL import Image
    with Image.open(fig) as im:  # one moderate row (jpeg): 4 tiles of 64 px
        assert im.format == "JPEG" and im.size == (4 * 64, 64)
