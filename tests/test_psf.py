"""reasoner/psf.py: the spectrum's signature of a PSF sets the blur's parameters."""

import pytest
import torch

from reason_restore.reasoner import psf
from reason_restore.reasoner.diagnosis import Diagnosis, Finding
from reason_restore.reasoner.psf import (ANISOTROPIC_TYPES, PASSBAND, fit_psf, measure_blur,
                                         upscaling_gain, welch_power)
from reason_restore.reasoner.synthesis import QUANTISATION_VARIANCE, degrade
from reason_restore.reasoner.taxonomy import get_type

from test_evidence import _photo_like, _tensor


def _blurred(spec: str, seed: int = 0) -> torch.Tensor:
    img, _ = degrade(_photo_like(seed=seed), spec, seed=1)
    return _tensor(img)


def _claim(width=2.0, length=4.0, angle=90.0, source="analyzer") -> Diagnosis:
    return Diagnosis.from_findings([Finding.from_params(
        "blur", {"width": width, "motion_length": length, "motion_angle": angle}, 0.8, source)],
        observation="A test image.")


def test_white_noise_reads_its_variance_at_every_frequency():
    g = torch.Generator().manual_seed(0)
    noise = 0.5 + 0.05 * torch.randn(1, 256, 256, generator=g).expand(3, -1, -1)
    power = welch_power(noise)
    assert power.shape == (128, 128)
    assert float(power[1:, 1:].mean()) == pytest.approx(0.05 ** 2, rel=0.05)
    assert welch_power(noise[:, :100]) is None  # smaller than one window


# Angles on both sides of the axes: a sign error in the synthesiser's convention (rows point
# down) would read 30 as 150.
@pytest.mark.parametrize("length, angle", [(9.0, 30.0), (14.0, 120.0), (6.0, 0.0), (12.0, 75.0)])
def test_a_motion_blur_is_read_from_the_zeros_of_its_spectrum(length, angle):
    image = _blurred(f"blur: width=0.4, motion_length={length}, motion_angle={angle}")
    fit = fit_psf(image, QUANTISATION_VARIANCE)
    assert fit["motion_length"] == pytest.approx(length, abs=1.0)
    assert abs((fit["motion_angle"] - angle + 90) % 180 - 90) <= 5.0
    assert fit["width"] == pytest.approx(0.4, abs=0.5)


@pytest.mark.parametrize("width", [1.0, 2.5])
def test_a_gaussian_blur_is_read_from_how_the_spectrum_bends(width):
    fit = fit_psf(_blurred(f"blur: width={width}"), QUANTISATION_VARIANCE)
    assert fit["width"] == pytest.approx(width, abs=0.4)
    assert fit["motion_length"] <= 3.0


def test_the_measured_psf_replaces_the_analyzers_and_says_so():
    image = _blurred("blur: width=0.4, motion_length=10, motion_angle=45")
    claimed = _claim()
    revised = measure_blur(image, claimed)
    blur = revised.finding("blur")
    assert blur.source == "evidence" and blur.confidence == 0.8  # presence stays the analyzer's
    assert blur.params["motion_length"] == pytest.approx(10.0, abs=1.0)
    assert blur.params["motion_angle"] == pytest.approx(45.0, abs=5.0)
    text = revised.chain_of_thought()
    assert "spectrum shows the zeros of a" in text and "motion_length=4 px" in text
    assert revised.reasoning[0].text == "A test image."


def test_nothing_to_measure_leaves_the_diagnosis_alone():
    image = _blurred("blur: width=0.4, motion_length=10, motion_angle=45")
    # An upscaling only the analyzer read: its scale is too rough to take out of the spectrum.
    beside = [Finding.from_params(t, get_type(t).strongest_params())
              for t in ANISOTROPIC_TYPES + ("low_resolution",)]
    for d in (Diagnosis.from_findings([Finding.from_params("noise", {"sigma": 10.0})]),
              _claim(source="user"), _claim(source="evidence"),
              *[Diagnosis.from_findings(_claim().findings + [f]) for f in beside]):
        assert measure_blur(image, d) is d
    small = image[:, :100, :100]
    claimed = _claim()
    assert measure_blur(small, claimed) is claimed


def test_an_upscaling_passes_low_frequencies_and_cuts_past_its_small_images_nyquist():
    gain = upscaling_gain(2.5)
    n = gain.shape[-1]
    assert float(gain[0, 2]) > 0.95
    assert float(gain[0, int(n / (2 * 2.5)) + 4]) < PASSBAND  # 0.2 cycles/px and beyond


@pytest.mark.parametrize("scale", [1.75, 2.5])
def test_an_upscalings_softness_is_taken_out_before_the_width_is_fitted(scale):
    upscaled = _blurred(f"low_resolution: scale={scale}")
    assert fit_psf(upscaled, QUANTISATION_VARIANCE)["width"] > 0.7  # the softness, as a blur
    assert fit_psf(upscaled, QUANTISATION_VARIANCE, scale)["width"] < 0.4
    width = 1.0 if scale < 2 else 1.5
    both = _blurred(f"blur: width={width}; low_resolution: scale={scale}")
    fit = fit_psf(both, QUANTISATION_VARIANCE, scale)
    assert fit["width"] == pytest.approx(width, abs=0.2) and fit["motion_length"] == 0.0


def test_beside_a_measured_upscaling_the_blur_left_is_measured_or_dropped():
    low_res = Finding.from_params("low_resolution", {"scale": 2.5}, 0.7, "evidence")
    claimed = Diagnosis.from_findings(_claim(width=3.0, length=0.0).findings + [low_res])
    both = measure_blur(_blurred("blur: width=1.5; low_resolution: scale=2.5"), claimed)
    assert both.finding("blur").params["width"] == pytest.approx(1.5, abs=0.2)
    alone = measure_blur(_blurred("low_resolution: scale=2.5"), claimed)
    assert alone.types == ["low_resolution"] and alone.finding("low_resolution") is low_res


def test_a_fit_the_input_contradicts_is_not_taken(monkeypatch):
    # The scene's own anisotropy can pass for a long motion: a PSF that would have removed
    # detail the input keeps is refused and the analyzer's reading stays.
    sharp = _tensor(_photo_like())
    monkeypatch.setattr(psf, "fit_psf", lambda image, floor, upscaling=None: {
        "width": 3.5, "motion_length": 18.0, "motion_angle": 0.0, "gain": 2.0})
    claimed = _claim(width=0.5, length=0.0)
    assert measure_blur(sharp, claimed) is claimed
