"""reasoner/resampling.py: the periodic trace of an upscaling sets the low-resolution scale."""

import pytest
import torch

from reason_restore.reasoner.diagnosis import Diagnosis, Finding
from reason_restore.reasoner.psf import measure_blur
from reason_restore.reasoner.resampling import (FOLD_LIMIT, NO_TRACE_LIMIT, TRACE_LIMIT,
                                                bound_by_resampling, fold_coherence,
                                                likelier_factor, resampling_trace,
                                                upscale_factors)
from reason_restore.reasoner.synthesis import degrade

from test_evidence import _photo_like, _tensor


def _degraded(spec: str, seed: int = 0) -> torch.Tensor:
    img, _ = degrade(_photo_like(seed=seed), spec, seed=1)
    return _tensor(img)


@pytest.fixture(scope="module")
def upscaled():
    return _degraded("low_resolution: scale=2.5")


def _blur(width: float, motion: float = 0.0, source="analyzer") -> Finding:
    return Finding.from_params("blur", {"width": width, "motion_length": motion}, 0.8, source)


@pytest.mark.parametrize("scale, frequency", [(1.75, 1 - 1 / 1.75), (2.5, 0.4), (3.4, 1 / 3.4)])
def test_an_upscaling_leaves_a_peak_at_its_frequency(scale, frequency):
    strength, f = resampling_trace(_degraded(f"low_resolution: scale={scale}"))
    assert strength > 10 * TRACE_LIMIT
    assert f == pytest.approx(frequency, abs=2 / 256)


@pytest.mark.parametrize("spec", ["clean", "blur: width=1.5", "jpeg: quality=40",
                                  "noise: sigma=5"])
def test_shift_invariant_damage_and_block_grids_leave_none(spec):
    image = _tensor(_photo_like()) if spec == "clean" else _degraded(spec)
    assert resampling_trace(image)[0] < TRACE_LIMIT
    claimed = Diagnosis.from_findings([_blur(1.5)])
    assert bound_by_resampling(image, claimed) is claimed


def test_both_factors_that_fold_onto_a_frequency_are_candidates():
    assert upscale_factors(0.4) == [2.5, pytest.approx(1.667, abs=1e-3)]
    assert upscale_factors(0.2) == [1.25]  # 1 / 0.2 = 5 is past the taxonomy's largest scale
    assert upscale_factors(0.0) == []


def test_the_trace_sets_the_scale_and_the_psf_fit_takes_the_blur_for_its_softness(upscaled):
    claimed = Diagnosis.from_findings([_blur(1.0), Finding.from_params(
        "low_resolution", {"scale": 1.5}, 0.7)], observation="A test image.")
    revised = bound_by_resampling(upscaled, claimed)
    assert revised.finding("low_resolution").params["scale"] == pytest.approx(2.5, abs=0.03)
    assert revised.finding("low_resolution").source == "evidence"  # measured: the detail
    assert revised.finding("blur") is claimed.finding("blur")      # check leaves it alone
    assert "trace of upscaling" in revised.chain_of_thought()
    # With the upscaling's transfer out of the spectrum no blur is left.
    measured = measure_blur(upscaled, revised)
    assert measured.types == ["low_resolution"]
    assert "no blur beyond the upscaling's softness" in measured.chain_of_thought()


def test_a_missing_low_resolution_is_added_and_a_stronger_blur_stays(upscaled):
    strong = _blur(3.0, motion=15.0)
    revised = bound_by_resampling(upscaled, Diagnosis.from_findings([strong]))
    assert revised.finding("blur") is not None
    assert revised.finding("low_resolution").params["scale"] == pytest.approx(2.5, abs=0.03)


def test_the_larger_factor_must_fit_the_detail_the_image_keeps():
    # 1.75 and 2.33 fold onto the same frequency; a 1.75 upscaling of an image with detail up
    # to its Nyquist keeps more detail than 2.33 would allow.
    revised = bound_by_resampling(_degraded("low_resolution: scale=1.75"), Diagnosis())
    assert revised.finding("low_resolution").params["scale"] == pytest.approx(1.75, abs=0.03)


@pytest.mark.parametrize("scale", [1.75, 7 / 3])
def test_of_two_factors_on_one_frequency_the_misfit_picks_the_true_one(scale):
    # Blurred first, the photo has too little fine detail for the detail check to rule 2.33
    # out (it took the larger factor for every smooth image before).
    image = _degraded(f"blur: width=1.5; low_resolution: scale={scale}")
    assert likelier_factor(image, 7 / 3, 1.75) == pytest.approx(scale)
    revised = bound_by_resampling(image, Diagnosis())
    assert revised.finding("low_resolution").params["scale"] == pytest.approx(scale, abs=0.03)


def test_a_real_blur_beside_an_upscaling_stays_and_is_measured():
    # The rule this replaced dropped any blur no more severe than the upscaling: here the
    # analyzer's blur (severity 0.38) against its own scale 2.5 (0.50).
    image = _degraded("blur: width=1.5; low_resolution: scale=1.75")
    claimed = Diagnosis.from_findings([_blur(2.5), _low_res(2.5)])
    revised = measure_blur(image, bound_by_resampling(image, claimed))
    assert revised.finding("low_resolution").params["scale"] == pytest.approx(1.75, abs=0.03)
    blur = revised.finding("blur")
    assert blur.source == "evidence" and blur.params["width"] == pytest.approx(1.5, abs=0.3)


def _low_res(scale: float, source="analyzer") -> Finding:
    return Finding.from_params("low_resolution", {"scale": scale}, 0.7, source)


@pytest.fixture(scope="module")
def blurred():
    return _degraded("blur: width=1.2")


def test_without_any_trace_the_low_resolution_read_is_a_blur(blurred):
    revised = bound_by_resampling(blurred, Diagnosis.from_findings([_low_res(3.0)]))
    assert revised.finding("low_resolution") is None
    blur = revised.finding("blur")
    assert blur.params["width"] == pytest.approx(1.2) and blur.source == "analyzer"
    assert "no trace of upscaling" in revised.chain_of_thought()
    # Beside a blur the analyzer also read, the low resolution simply goes.
    both = Diagnosis.from_findings([_blur(0.8), _low_res(3.0)])
    revised = bound_by_resampling(blurred, both)
    assert revised.types == ["blur"] and revised.finding("blur").params["width"] == 0.8


@pytest.mark.parametrize("finding, other", [
    (_low_res(3.0, source="evidence"), None),
    (_low_res(3.0, source="user"), None),
    (_low_res(3.0), Finding.from_params("noise", {"sigma": 10.0}, 0.9)),  # noise hides one
])
def test_no_verdict_from_a_missing_trace_where_it_could_not_show(blurred, finding, other):
    claimed = Diagnosis.from_findings([finding] + ([other] if other else []))
    assert bound_by_resampling(blurred, claimed) is claimed


def test_an_upscaling_whose_trace_sits_on_the_block_grid_is_not_taken_for_a_blur():
    # 3.2 puts its trace at 5/16 cycles/px, where the scale search ignores peaks (JPEG's
    # macroblocks); the verdict "no trace" looks there too.
    upscaled = _degraded("low_resolution: scale=3.2")
    assert resampling_trace(upscaled)[0] < TRACE_LIMIT
    claimed = Diagnosis.from_findings([_low_res(3.0)])
    assert bound_by_resampling(upscaled, claimed) is claimed


def test_an_enlargement_by_two_leaves_no_trace_but_folds_its_spectrum(blurred):
    doubled = _degraded("low_resolution: scale=2.0")
    assert resampling_trace(doubled, keep_block_grid=True)[0] < NO_TRACE_LIMIT
    assert fold_coherence(doubled) > FOLD_LIMIT > fold_coherence(blurred)
    assert fold_coherence(_tensor(_photo_like())) < FOLD_LIMIT
    claimed = Diagnosis.from_findings([_low_res(2.0)])
    assert bound_by_resampling(doubled, claimed) is claimed   # not taken for a blur
    assert bound_by_resampling(blurred, claimed) is not claimed


def test_user_findings_are_left_alone(upscaled):
    user = Diagnosis.from_findings([_blur(1.0, source="user")])
    assert bound_by_resampling(upscaled, user) is user


def test_the_trace_names_a_wrong_image_shape_and_skips_tiny_images():
    with pytest.raises(ValueError, match="image: expected"):
        resampling_trace(torch.rand(1, 3, 64, 64))
    assert resampling_trace(torch.rand(3, 32, 32)) is None


def test_the_reasoner_applies_the_trace(upscaled, monkeypatch):
    from reason_restore.reasoner import engine
    from reason_restore.reasoner.analyzer import AnalyzerConfig, DegradationAnalyzer
    monkeypatch.setattr(engine, "decode", lambda outputs, observations=None: [
        Diagnosis.from_findings([_blur(0.9)])])
    model = DegradationAnalyzer(AnalyzerConfig(width=8, crop=64, max_crops=1, hidden=16))
    checked = engine.Reasoner(model).diagnose(upscaled[None])[0]
    assert checked.finding("blur") is None and checked.finding("low_resolution") is not None
    raw = engine.Reasoner(model, detail_check=False).diagnose(upscaled[None])[0]
    assert raw.finding("blur") is not None and raw.finding("low_resolution") is None


def test_the_severity_score_reads_the_scale_the_trace_set(upscaled, monkeypatch):
    from reason_restore.reasoner import engine
    from reason_restore.reasoner.analyzer import AnalyzerConfig, DegradationAnalyzer
    from reason_restore.reasoner.taxonomy import TYPE_NAMES
    monkeypatch.setattr(engine, "decode", lambda outputs, observations=None: [
        Diagnosis.from_findings([_blur(0.9)])])
    model = DegradationAnalyzer(AnalyzerConfig(width=8, crop=64, max_crops=1, hidden=16))
    reasoner = engine.Reasoner(model)
    per, _ = reasoner.score(upscaled[None])
    found = reasoner.diagnose(upscaled[None])[0].finding("low_resolution")
    assert float(per[0, TYPE_NAMES.index("blur")]) == 0.0
    assert float(per[0, TYPE_NAMES.index("low_resolution")]) == pytest.approx(
        found.severity * found.confidence)
