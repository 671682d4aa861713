"""The data-consistency step: its forward model is the synthesiser's, and it recovers what the
diagnosis says the input still holds."""

import numpy as np
import pytest
import torch

from reason_restore.reasoner import synthesis
from reason_restore.reasoner.diagnosis import Diagnosis
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
    roles = consistency.SCENE_TYPES + consistency.LINEAR_TYPES + consistency.ADDITIVE_TYPES
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
    np.testing.assert_allclose(consistency.refine(x_hat, y, truth, prior_variance=1e-4),
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


@pytest.mark.parametrize("spec", [None, "", "haze: beta=2", "haze: beta=2; blur: width=2"])
def test_refine_leaves_undiagnosed_and_scene_level_images_alone(spec):
    x_hat, y = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    diagnosis = None if spec is None else synthesis.ground_truth(synthesis.parse_spec(spec))
    assert consistency.refine(x_hat, y, diagnosis) is x_hat


def test_refine_names_a_mismatched_input():
    _, truth = synthesis.degrade(_photo(), "blur: width=2")
    with pytest.raises(ValueError, match="y: expected the shape"):
        consistency.refine(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 8, 16), truth)


def test_linear_operator_rejects_a_non_linear_finding():
    truth = synthesis.ground_truth(synthesis.parse_spec("jpeg: quality=20"))
    with pytest.raises(ValueError, match="not a linear degradation"):
        consistency.linear_operator(truth.findings, (8, 8))


def test_refine_works_under_inference_mode():
    # ComfyUI runs nodes inside torch.inference_mode(): autograd must still give A^T.
    clean = _photo()
    degraded, truth = synthesis.degrade(clean, "blur: width=2.0", seed=3)
    y = _t(synthesis.quantise(degraded))
    expected = consistency.refine(y.clone(), y, truth)
    with torch.inference_mode():
        y_inf = y.clone()
        got = consistency.refine(y_inf.clone(), y_inf, truth)
    assert torch.equal(got, expected)
