"""The data-consistency step: its forward model is the synthesiser's, and it recovers what the
diagnosis says the input still holds."""

import numpy as np
import pytest
import torch

from reason_restore.reasoner import synthesis
from reason_restore.reasoner.diagnosis import Diagnosis, Finding
from reason_restore.restorer import consistency


def _photo(h=64, w=80):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([0.5 + 0.3 * np.sin(x / 5), 0.3 + 0.4 * (y / h), 0.5 + 0.2 * np.cos(
        (x + y) / 4)], -1)
    img[20:40, 30:50] = 0.85
    return np.clip(img, 0, 1).astype(np.float32)


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]


def _psnr(a, b):
    return float(10 * torch.log10(1 / (a - b).pow(2).mean()))


def test_every_taxonomy_type_has_a_role():
    roles = (consistency.SCENE_TYPES + consistency.POINTWISE_TYPES + consistency.LINEAR_TYPES
             + consistency.ADDITIVE_TYPES)
    assert sorted(roles) == sorted(synthesis.TYPE_NAMES)


def test_fft_convolution_is_the_synthesisers_convolution():
    x = torch.rand(1, 3, 40, 52)
    k = torch.from_numpy(synthesis.blur_kernel(1.5, 9.0, 30.0))
    assert k.shape[0] > 9
    np.testing.assert_allclose(consistency.fft_convolve(x, k),
                               synthesis.convolve_tensor(x, k), atol=1e-5)


@pytest.mark.parametrize("spec", ["blur: width=2.0",
                                  "blur: width=1, motion_length=8, motion_angle=60",
                                  "low_resolution: scale=2.5",
                                  "blur: width=1.5; low_resolution: scale=2"])
def test_forward_model_reproduces_the_synthesiser(spec):
    clean = _photo()
    degraded, truth = synthesis.degrade(clean, spec)
    A = consistency.linear_operator(truth.findings, clean.shape[:2])
    np.testing.assert_allclose(A(_t(clean)), _t(degraded), atol=2e-3)


@pytest.mark.parametrize("spec", ["blur: width=2.0", "low_resolution: scale=2",
                                  ("blur: width=1.5, motion_length=6, motion_angle=30; "
                                   "noise: sigma=2")])
def test_refine_recovers_detail_the_operator_kept(spec):
    # A network that did nothing (x_hat = y): the data step alone must deconvolve.
    clean = _photo()
    degraded, truth = synthesis.degrade(clean, spec, seed=3)
    y = _t(synthesis.quantise(degraded))
    z = consistency.refine(y.clone(), y, truth, prior_variance=1e-3)
    assert _psnr(z, _t(clean)) > _psnr(y, _t(clean)) + 1.5


@pytest.mark.parametrize("blur", [(2.0, 0.0, 0.0), (1.0, 9.0, 0.0), (0.8, 11.0, 90.0)])
def test_fourier_solve_is_the_converged_conjugate_gradient_solve(blur):
    # A blur that is its own mirror image: one FFT gives what CG reaches after many iterations
    # and does not reach after a few.
    torch.manual_seed(0)
    clean = _t(_photo())
    kernel = torch.from_numpy(synthesis.blur_kernel(*blur))
    assert consistency._fits_fourier(kernel, clean)
    y = consistency.fft_convolve(clean, kernel) + 0.003 * torch.randn_like(clean)
    x_hat = clean + 0.03 * torch.randn_like(clean)
    A = lambda x: consistency.fft_convolve(x, kernel)  # noqa: E731
    lam = 0.01
    exact = consistency._solve_fourier(kernel, x_hat, y, lam)
    with torch.enable_grad():
        converged = consistency._solve(A, x_hat, y, lam, 400)
        early = consistency._solve(A, x_hat, y, lam, 5)
    # Away from the border, where the mirror extension and the reflect-padded operator's
    # adjoint differ (by up to 0.03 at the edge pixels).
    inner = (..., slice(10, -10), slice(10, -10))
    gap = float((exact - converged)[inner].abs().max())
    assert gap < 3e-3
    assert float((early - converged)[inner].abs().max()) > 5 * gap


@pytest.mark.parametrize("spec", ["blur: width=2.0", "low_resolution: scale=2",
                                  "blur: width=1.5, motion_length=15, motion_angle=45"])
def test_under_optics_alone_the_network_output_does_not_enter_the_step(spec):
    # The prior mean is the input: two very different restorations give one result, and it is
    # the input's own deconvolution (x_hat = y).
    clean = _photo()
    degraded, truth = synthesis.degrade(clean, spec, seed=3)
    y, c = _t(synthesis.quantise(degraded)), _t(clean)
    good, bad = _rough_guess(c, error=0.01), torch.rand_like(y)
    z = consistency.refine(good, y, truth)
    np.testing.assert_allclose(consistency.refine(bad, y, truth), z, atol=1e-6)
    np.testing.assert_allclose(consistency.refine(y.clone(), y, truth), z, atol=1e-6)
    assert _psnr(z, c) > _psnr(y, c) + 0.5


def test_with_noise_or_a_veil_the_network_output_still_counts():
    # As the noise filter's pilot, and as the prior mean behind a pointwise map.
    clean = _photo()
    for spec in ("blur: width=1.5; noise: sigma=15",
                 "haze: beta=1.5, airlight=0.9; blur: width=1.5"):
        degraded, truth = synthesis.degrade(clean, spec, seed=3)
        y, c = _t(synthesis.quantise(degraded)), _t(clean)
        good = _rough_guess(c, error=0.01)
        assert _psnr(consistency.refine(good, y, truth), c) > \
            _psnr(consistency.refine(torch.rand_like(y), y, truth), c) + 1.0


def test_an_oblique_motion_keeps_conjugate_gradients():
    # Its mirror image is another PSF: the mirror extension would contradict the data.
    y = torch.rand(1, 3, 64, 80)
    assert consistency._fits_fourier(torch.from_numpy(synthesis.blur_kernel(1, 9, 0)), y)
    assert not consistency._fits_fourier(torch.from_numpy(synthesis.blur_kernel(1, 15, 45)), y)
    # A kernel wider than the image's mirror period cannot be taken out in one FFT.
    assert not consistency._fits_fourier(torch.from_numpy(synthesis.blur_kernel(3, 0, 0)),
                                         y[..., :6, :6])


def test_refine_takes_the_fourier_path_for_a_lone_symmetric_blur(monkeypatch):
    clean = _photo()
    degraded, truth = synthesis.degrade(clean, "blur: width=1.5, motion_length=6", seed=1)
    y = _t(synthesis.quantise(degraded))
    calls = []
    solve = consistency._solve_fourier
    monkeypatch.setattr(consistency, "_solve_fourier",
                        lambda *a: calls.append(1) or solve(*a))
    z = consistency.refine(y.clone(), y, truth, prior_variance=1e-3)
    assert calls and _psnr(z, _t(clean)) > _psnr(y, _t(clean)) + 1.5
    calls.clear()
    _, oblique = synthesis.degrade(clean, "blur: width=1, motion_length=15, motion_angle=45")
    consistency.refine(y.clone(), y, oblique, prior_variance=1e-3)
    assert not calls


def test_refine_never_blows_up_under_heavy_noise():
    clean = _photo()
    degraded, truth = synthesis.degrade(clean, "blur: width=3; noise: sigma=50", seed=1)
    y = _t(degraded)
    for var in (1e-5, 1e-3, 1.0):
        z = consistency.refine(y.clone(), y, truth, prior_variance=var)
        assert torch.isfinite(z).all() and z.min() >= 0 and z.max() <= 1


def test_without_a_linear_step_refine_is_the_variance_weighted_blend():
    clean = _photo()
    degraded, truth = synthesis.degrade(clean, "noise: sigma=10", seed=2)
    y, x_hat = _t(degraded).clamp(0, 1), _t(clean)
    lam = consistency.error_variance(truth, y, x_hat) / 1e-4
    expected = (y + lam * x_hat) / (1 + lam)
    np.testing.assert_allclose(consistency.refine(x_hat, y, truth, prior_variance=1e-4,
                                                  denoise=False),
                               expected.clamp(0, 1), atol=1e-6)
    # sigma 10 -> variance ~1.5e-3 against a prior of 1e-4: mostly the restoration.
    assert lam > 10


def test_jpeg_variance_grows_as_quality_falls():
    x = _t(_photo())
    nothing = consistency.error_variance(Diagnosis.from_findings([]), x, x)
    assert nothing == pytest.approx(consistency.QUANTISATION_VARIANCE)
    _, q80 = synthesis.degrade(_photo(), "jpeg: quality=80")
    _, q10 = synthesis.degrade(_photo(), "jpeg: quality=10")
    assert consistency.error_variance(q10, x, x) > 3 * consistency.error_variance(q80, x, x)


@pytest.mark.parametrize("spec", [None, "", "rain: density=0.02, length=15",
                                  "haze: beta=2; rain: density=0.02, length=15; blur: width=2",
                                  "rain: density=0.02, length=15; low_light: exposure=0.3"])
def test_refine_leaves_undiagnosed_and_scene_level_images_alone(spec):
    x_hat, y = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    diagnosis = None if spec is None else synthesis.ground_truth(synthesis.parse_spec(spec))
    assert consistency.refine(x_hat, y, diagnosis) is x_hat


def test_tone_curve_is_the_synthesisers_and_inverts():
    clean = _photo()
    degraded, truth = synthesis.degrade(clean, "low_light: exposure=0.35, gamma=1.8")
    curve = consistency.ToneCurve(truth.finding("low_light"))
    np.testing.assert_allclose(curve(_t(clean)), _t(degraded), atol=1e-6)
    np.testing.assert_allclose(curve.inverse(curve(_t(clean))), _t(clean), atol=1e-5)
    assert consistency.ToneCurve().identity


def _noisy_guess(clean, seed=0):
    # A stand-in network output about 30 dB from the truth.
    g = torch.Generator().manual_seed(seed)
    return (clean + 0.03 * torch.randn(clean.shape, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("spec, gain", [
    # Low light alone leaves the scene recoverable up to 8-bit rounding in the shadows.
    ("low_light: exposure=0.3, gamma=2", 10.0),
    ("low_light: exposure=0.4, gamma=1.5; blur: width=1.5", 0.5),
    ("low_light: exposure=0.4, gamma=1.5; jpeg: quality=40", 0.5),
    # The synthetic veil follows a smooth depth map: its transmission, fitted on the guess,
    # lets the input's own detail through.
    ("haze: beta=1.5, airlight=0.9", 2.0),
    ("haze: beta=1.5, airlight=0.9; low_light: exposure=0.5, gamma=1.5", 2.0),
    # JPEG of the (noisy) guess is measured as a large error: there the input counts less.
    ("haze: beta=2.5, airlight=0.8; jpeg: quality=60", 0.5),
])
def test_refine_undoes_the_diagnosed_veil_and_tone_curve(spec, gain):
    clean = _photo(96, 128)
    degraded, truth = synthesis.degrade(clean, spec, seed=1)
    y, c = _t(synthesis.quantise(degraded)), _t(clean)
    x_hat = _noisy_guess(c)
    assert _psnr(consistency.refine(x_hat, y, truth), c) > _psnr(x_hat, c) + gain


def test_under_heavy_noise_the_curve_step_keeps_the_network_output():
    # Inverting the curve would multiply the shadows' noise: the weights must see that.
    clean = _photo(96, 128)
    degraded, truth = synthesis.degrade(clean, "low_light: exposure=0.3, gamma=2; "
                                               "noise: sigma=25", seed=1)
    y, c = _t(degraded).clamp(0, 1), _t(clean)
    x_hat = _noisy_guess(c)
    z = consistency.refine(x_hat, y, truth)
    assert abs(_psnr(z, c) - _psnr(x_hat, c)) < 0.5
    naive = consistency.ToneCurve(truth.finding("low_light")).inverse(y).clamp(0, 1)
    assert _psnr(naive, c) < _psnr(x_hat, c) - 5  # the exact inverse amplifies the noise


def test_veil_of_the_truth_is_the_synthesisers():
    # Fitting on the clean image itself recovers the veil: H(clean) is the hazy input.
    clean = _photo(96, 128)
    degraded, truth = synthesis.degrade(clean, "haze: beta=2, airlight=0.85", seed=5)
    veil = consistency.Veil.fit(truth.finding("haze"), _t(degraded), _t(clean), radius=2)
    assert float(veil.t.min()) < 0.4 and float(veil.t.max()) > 0.8  # depth varies
    np.testing.assert_allclose(veil(_t(clean)), _t(degraded), atol=0.02)
    np.testing.assert_allclose(veil.inverse(veil(_t(clean))), _t(clean), atol=1e-4)


def test_refine_names_a_mismatched_input():
    _, truth = synthesis.degrade(_photo(), "blur: width=2")
    with pytest.raises(ValueError, match="y: expected the shape"):
        consistency.refine(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 8, 16), truth)


def test_linear_operator_rejects_a_non_linear_finding():
    truth = synthesis.ground_truth(synthesis.parse_spec("jpeg: quality=20"))
    with pytest.raises(ValueError, match="not a linear degradation"):
        consistency.linear_operator(truth.findings, (8, 8))


@pytest.mark.parametrize("spec", ["blur: width=2.0",
                                  "haze: beta=1.5, airlight=0.9; blur: width=1.5"])
def test_refine_works_under_inference_mode(spec):
    # ComfyUI runs nodes inside torch.inference_mode(): autograd must still give A^T, also
    # with the veil's per-pixel weights in the solve.
    clean = _photo()
    degraded, truth = synthesis.degrade(clean, spec, seed=3)
    y = _t(synthesis.quantise(degraded))
    expected = consistency.refine(y.clone(), y, truth)
    with torch.inference_mode():
        y_inf = y.clone()
        got = consistency.refine(y_inf.clone(), y_inf, truth)
    assert torch.equal(got, expected)


def _rough_guess(c, seed=0, error=0.03):
    # A restoration with the network's kind of error: right structure, wrong fine values.
    g = torch.Generator().manual_seed(seed)
    return (c + error * torch.randn(c.shape, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("spec", ["noise: sigma=25", "noise: sigma=10, shot=10",
                                  "noise: sigma=15; jpeg: quality=60"])
def test_the_noise_comes_out_of_the_input_before_the_step(spec):
    clean = _photo(96, 128)
    degraded, truth = synthesis.degrade(clean, spec, seed=4)
    y, c = _t(synthesis.quantise(degraded)), _t(clean)
    x_hat = _rough_guess(c)
    with_filter = _psnr(consistency.refine(x_hat, y, truth), c)
    assert with_filter > _psnr(consistency.refine(x_hat, y, truth, denoise=False), c) + 1.0
    assert with_filter > _psnr(x_hat, c) + 1.0


def test_the_pilot_is_the_restoration_degraded_again():
    # Dark, noisy input: the pilot must be the *darkened* restoration. Filtering the dark
    # input with the bright restoration's energy as its pilot would keep most of its noise.
    clean = _photo(96, 128)
    degraded, truth = synthesis.degrade(clean, "low_light: exposure=0.5, gamma=1.5; "
                                               "noise: sigma=12", seed=5)
    y, c = _t(synthesis.quantise(degraded)), _t(clean)
    x_hat = _rough_guess(c, error=0.02)
    z = consistency.refine(x_hat, y, truth)
    assert _psnr(z, c) > _psnr(consistency.refine(x_hat, y, truth, denoise=False), c) + 0.5
    dark = consistency.ToneCurve(truth.finding("low_light"))(c)
    noiseless = (dark - y).pow(2).mean()
    denoised, left = consistency.denoise_observation(truth, y, dark)
    assert (dark - denoised).pow(2).mean() < noiseless / 4 and 0 < left < noiseless


def test_without_a_noise_or_jpeg_finding_nothing_is_filtered():
    y = _t(_photo())
    _, truth = synthesis.degrade(_photo(), "blur: width=1.5")
    assert consistency.denoise_observation(truth, y, y) == (y, None)


def test_with_jpeg_alone_the_filter_takes_its_error_out():
    clean = _photo(96, 128)
    degraded, truth = synthesis.degrade(clean, "jpeg: quality=20")
    y, c = _t(degraded), _t(clean)
    pilot = (c + 0.01 * torch.randn(c.shape, generator=torch.Generator().manual_seed(0)))
    out, left = consistency.denoise_observation(truth, y, pilot.clamp(0, 1))
    assert _psnr(out, c) > _psnr(y, c) + 0.5 and left > 0  # 29.6 -> 30.5 dB here


def test_the_veil_never_turns_a_pixel_negative():
    # A guess with twice the clean image's contrast halves the fitted transmission; under the
    # floor the inverse would push the darkest pixels below 0.
    clean = _photo(96, 128)
    degraded, truth = synthesis.degrade(clean, "haze: beta=2, airlight=0.85", seed=5)
    overdone = 0.85 + 2.0 * (_t(clean) - 0.85)
    veil = consistency.Veil.fit(truth.finding("haze"), _t(degraded), overdone, radius=2)
    assert float(veil.inverse(_t(degraded)).min()) > -1e-4  # -0.48 without the floor


def _thick_veil(airlight=0.75, t_far=0.05, t_near=0.5):
    # A veil far thicker at the top than at the bottom over a textured scene.
    clean = _t(_photo(96, 128))
    t = torch.linspace(t_far, t_near, 96).view(1, 1, 96, 1).expand(1, 1, 96, 128)
    return clean, clean * t + airlight * (1 - t)


def test_thick_airlight_reads_the_airlight_where_the_veil_is_thick():
    clean, veiled = _thick_veil(airlight=0.75)
    read = consistency.thick_airlight(veiled, clean, radius=4)
    assert read is not None and abs(read - 0.75) < 0.01
    # A guess that left part of the veil, with the same airlight, reads the same.
    left = 0.6 * clean + 0.75 * 0.4
    assert abs(consistency.thick_airlight(veiled, left, radius=4) - 0.75) < 0.01


def test_thick_airlight_leaves_a_thin_veil_to_the_diagnosis():
    clean, veiled = _thick_veil(t_far=0.7, t_near=0.9)
    assert consistency.thick_airlight(veiled, clean, radius=4) is None


def test_the_veil_rereads_an_analyzers_airlight_but_keeps_a_users():
    clean, veiled = _thick_veil(airlight=0.75)
    params = {"beta": 3.0, "airlight": 0.9}
    analyzer = Finding.from_params("haze", params, confidence=0.7)
    user = Finding.from_params("haze", params, 1.0, "user")
    assert abs(consistency.Veil.fit(analyzer, veiled, clean, radius=4).airlight - 0.75) < 0.01
    assert consistency.Veil.fit(user, veiled, clean, radius=4).airlight == 0.9


def test_depth_stretch_deepens_the_fitted_veil_above_its_floor():
    clean = _photo(96, 128)
    degraded, truth = synthesis.degrade(clean, "haze: beta=2, airlight=0.85", seed=5)
    left = 0.85 + 0.7 * (_t(clean) - 0.85)  # the guess kept part of the veil
    finding = truth.finding("haze")
    plain = consistency.Veil.fit(finding, _t(degraded), left, radius=2)
    deeper = consistency.Veil.fit(finding, _t(degraded), left, radius=2, depth_stretch=1.2)
    expected = torch.maximum(plain.t ** 1.2, plain.floor).clamp(consistency.MIN_TRANSMISSION, 1)
    torch.testing.assert_close(deeper.t, expected)
    assert float((deeper.t - plain.t).min()) < -0.02  # somewhere deeper, never above the fit
    assert float((deeper.t - plain.t).max()) <= 1e-6
    # Here the guess left veil: the stretched fit is the better inverse.
    c = _t(clean)
    assert _psnr(deeper.inverse(_t(degraded)), c) > _psnr(plain.inverse(_t(degraded)), c) + 1


def test_only_the_shipped_restorer_carries_the_veil_calibration(tmp_path):
    import shutil
    from reason_restore.restorer import engine
    shipped = engine.load_default_restorer()
    assert shipped.model.veil_depth_stretch == engine.SHIPPED_VEIL_DEPTH_STRETCH
    copy = tmp_path / "mine.safetensors"
    shutil.copy(engine.DEFAULT_RESTORER, copy)
    assert not hasattr(engine.load_default_restorer(copy).model, "veil_depth_stretch")


def _stub_restorer(network):
    """The engine's Restorer around a tiny model whose network is ``network(x)``."""
    from reason_restore.restorer.engine import Restorer
    from reason_restore.restorer.network import PriorRestorer, RestorerConfig
    from reason_restore.restorer.prior import prior_dim
    model = PriorRestorer(RestorerConfig(prior_dim=prior_dim(), width=8))
    model.forward = lambda x, prior, **conditioning: network(x)
    return Restorer(model)


def test_tiles_undo_the_veil_the_whole_image_shows():
    """The veil is fitted once on the whole image and handed to the tiles: in tiles a third of
    the image's side the result is the whole image's. (Fitted per tile, each tile fitted
    windows a fraction of the tile's side, and could re-read its own airlight: up to 0.08
    apart here.)"""
    clean = _photo(192, 192)
    degraded, _ = synthesis.degrade(clean, "haze: beta=2.5, airlight=0.75", seed=3)
    read = Diagnosis.from_findings([Finding.from_params("haze", {"beta": 2.5, "airlight": 0.9},
                                                        confidence=0.8)])
    # A pointwise network, so tiles cannot change its output: a dehaze that leaves veil.
    restorer, y = _stub_restorer(lambda x: 0.75 + (x - 0.75) / 0.4), _t(degraded)
    whole = restorer.restore(y, [read], tile=192)
    tiled = restorer.restore(y, [read], tile=64, overlap=8)
    torch.testing.assert_close(tiled, whole, atol=1e-4, rtol=0)
    assert _psnr(whole, _t(clean)) > _psnr(y, _t(clean)) + 3  # 13.8 -> 17.1 dB
    assert restorer.last_airlight == [(0, 0.9, 0.9)]  # no thick veil here: the diagnosis's


def test_restore_reports_an_airlight_it_reread():
    from reason_restore.restorer.engine import airlight_note
    clean, veiled = _thick_veil(airlight=0.75)
    params = {"beta": 3.0, "airlight": 0.9}
    restorer = _stub_restorer(lambda x: clean)
    for source, expected in (("analyzer", 0.75), ("user", 0.9)):
        finding = Finding.from_params("haze", params, 0.7, source)
        restorer.restore(veiled, [Diagnosis.from_findings([finding])])
        ((index, said, used),) = restorer.last_airlight
        assert index == 0 and said == 0.9 and abs(used - expected) < 0.01
    assert airlight_note(0.9, 0.7512) == ("airlight 0.75, read where the veil is thick (the "
                                          "diagnosis said 0.90)")
    assert airlight_note(0.9, 0.9) is None


def test_without_a_data_step_the_second_pass_is_skipped_and_the_bar_completes():
    rain = Diagnosis.from_findings([Finding.from_params("rain", {"density": 0.02, "length": 20})])
    restorer, y = _stub_restorer(lambda x: x * 0.5), torch.rand(1, 3, 150, 150)
    calls = []
    out = restorer.restore(y, [rain], tile=64, overlap=8,
                           progress=lambda done, total: calls.append((done, total)))
    torch.testing.assert_close(out, y * 0.5)  # the network's output, not refined
    assert len(calls) == 10 and calls[-1] == (18, 18)  # 3 x 3 tiles, then the skipped pass


def test_under_optics_alone_the_restorer_skips_the_network_it_would_not_use(monkeypatch):
    from reason_restore.restorer import engine
    clean = _photo(150, 150)
    degraded, truth = synthesis.degrade(clean, "blur: width=1.5", seed=2)
    y, seen = _t(synthesis.quantise(degraded)), []
    restorer = _stub_restorer(lambda x: seen.append(1) or torch.rand_like(x))
    calls = []
    out = restorer.restore(y, [truth], tile=64, overlap=8,
                           progress=lambda done, total: calls.append((done, total)))
    assert not seen  # the network never ran
    assert calls[-1] == (18, 18)  # the skipped network pass still fills its share of the bar
    # Running it changes nothing: the data step does not read its output.
    monkeypatch.setattr(engine, "ignores_restoration", lambda *a: False)
    torch.testing.assert_close(restorer.restore(y, [truth], tile=64, overlap=8), out,
                               atol=0, rtol=0)
    assert seen
    # With noise the network's output pilots the filter: it runs.
    monkeypatch.undo()
    seen.clear()
    _, noisy = synthesis.degrade(clean, "blur: width=1.5; noise: sigma=10", seed=2)
    restorer.restore(y, [noisy], tile=64, overlap=8)
    assert seen
