"""reasoner/evidence.py: the input's own detail bounds the blur and low-resolution findings."""

import numpy as np
import pytest
import torch

from reason_restore.reasoner.diagnosis import Diagnosis, Finding
from reason_restore.reasoner.evidence import (DETAIL_LIMIT, bound_by_detail, bound_severities,
                                              detail_ratio)
from reason_restore.reasoner.taxonomy import TYPE_NAMES
from reason_restore.reasoner.synthesis import degrade, quantise


def _photo_like(size=256, seed=0) -> np.ndarray:
    """Random-phase noise with a natural image's 1/f amplitude spectrum, in [0, 1]."""
    rng = np.random.default_rng(seed)
    fy, fx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / size)
    chans = []
    for _ in range(3):
        phase = np.exp(2j * np.pi * rng.random((size, size)))
        x = np.fft.ifft2(amp * phase).real
        chans.append((x - x.min()) / (x.max() - x.min()))
    return np.stack(chans, -1).astype(np.float32)


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(quantise(img)).permute(2, 0, 1)


def _blur(width: float, source="analyzer") -> Finding:
    return Finding.from_params("blur", {"width": width}, 0.9, source)


@pytest.fixture(scope="module")
def mildly_blurred():
    img, _ = degrade(_photo_like(), "blur: width=1.0", seed=1)
    return _tensor(img)


def test_the_true_operator_fits_and_a_much_stronger_one_does_not(mildly_blurred):
    assert detail_ratio(mildly_blurred, [_blur(1.0)]) <= DETAIL_LIMIT
    assert detail_ratio(mildly_blurred, [_blur(3.5)]) > 10 * DETAIL_LIMIT
    assert detail_ratio(mildly_blurred, []) is None  # no operator, nothing to test
    assert detail_ratio(mildly_blurred, [_blur(0.5)]) is None  # passes > 0.1 % to Nyquist


def test_an_overestimated_blur_is_pulled_down_and_the_reasoning_says_why(mildly_blurred):
    claimed = Diagnosis.from_findings([_blur(3.5)], observation="A test image.")
    bounded = bound_by_detail(mildly_blurred, claimed)
    width = bounded.finding("blur").params["width"]
    assert 0.6 < width < 2.0  # near the true 1.0, far below the claimed 3.5
    assert bounded.finding("blur").severity < claimed.finding("blur").severity
    assert detail_ratio(mildly_blurred, bounded.findings) <= DETAIL_LIMIT
    assert "detail ratio" in bounded.chain_of_thought()
    assert bounded.reasoning[0].text == "A test image."
    right = Diagnosis.from_findings([_blur(1.0)])
    assert bound_by_detail(mildly_blurred, right) is right


def test_a_blur_on_an_image_with_detail_up_to_nyquist_is_dropped():
    sharp = _photo_like(seed=2)
    grain = 0.5 * sharp + 0.5 * np.random.default_rng(3).random(sharp.shape, dtype=np.float32)
    for claim in (_blur(3.0), Finding.from_params("low_resolution", {"scale": 3.0})):
        for img in (sharp, grain):
            bounded = bound_by_detail(_tensor(img), Diagnosis.from_findings([claim]))
            assert not bounded.findings and "-> none" in bounded.chain_of_thought()


def test_user_findings_and_rainy_diagnoses_are_left_alone(mildly_blurred):
    user = Diagnosis.from_findings([_blur(3.5, source="user")])
    assert bound_by_detail(mildly_blurred, user) is user
    rain = Finding.from_params("rain", {"density": 0.01, "length": 20})
    rainy = Diagnosis.from_findings([_blur(3.5), rain])
    assert bound_by_detail(mildly_blurred, rainy) is rainy  # streaks of unknown layout


# A 4-px blur claim: JPEG at 50 leaves detail that rules it out; noise of sigma 15 hides it.
@pytest.mark.parametrize("additive, stronger_kept", [("jpeg: quality=50", False),
                                                     ("noise: sigma=15", True)])
def test_diagnosed_noise_and_jpeg_are_part_of_the_floor(additive, stronger_kept):
    img, truth = degrade(_photo_like(), "blur: width=1.0; " + additive, seed=1)
    img, extra = _tensor(img), truth.findings[-1]
    right = Diagnosis.from_findings([_blur(1.0), extra])
    assert bound_by_detail(img, right) is right  # the noise or blocking explains the stopband
    unexplained = bound_by_detail(img, Diagnosis.from_findings([_blur(1.0)])).finding("blur")
    assert unexplained is None or unexplained.params["width"] < 1.0  # rounding alone does not
    stronger = Diagnosis.from_findings([_blur(4.0), extra])
    bounded = bound_by_detail(img, stronger)
    if stronger_kept:
        assert bounded is stronger
    else:
        assert bounded.finding("blur").params["width"] < 2.0


def test_the_reasoner_applies_the_check_unless_told_not_to(mildly_blurred, monkeypatch):
    from reason_restore.reasoner import engine
    from reason_restore.reasoner.analyzer import AnalyzerConfig, DegradationAnalyzer

    def overestimate(outputs, observations):
        return [Diagnosis.from_findings([_blur(3.5)], observation=observations[0])]

    monkeypatch.setattr(engine, "decode", overestimate)
    model = DegradationAnalyzer(AnalyzerConfig(width=8, crop=64, max_crops=1, hidden=16))
    image = mildly_blurred[None]
    checked = engine.Reasoner(model).diagnose(image)[0]
    assert checked.finding("blur").params["width"] < 2.0
    raw = engine.Reasoner(model, detail_check=False).diagnose(image)[0]
    assert raw.finding("blur").params["width"] == pytest.approx(3.5)


def test_the_severity_score_revises_blur_as_diagnose_does(mildly_blurred, monkeypatch):
    from reason_restore.reasoner import engine
    from reason_restore.reasoner.analyzer import AnalyzerConfig, DegradationAnalyzer
    claimed, b = _blur(3.5), TYPE_NAMES.index("blur")

    def overestimate(outputs, observations=None):
        return [Diagnosis.from_findings([claimed], observation=(observations or [""])[0])]

    def blur_and_noise(outputs):  # the soft scores: the claimed blur and a little noise
        per = torch.zeros(1, len(TYPE_NAMES))
        per[0, b], per[0, TYPE_NAMES.index("noise")] = claimed.severity, 0.1
        return per, 1.0 - (1.0 - per).prod(1)

    monkeypatch.setattr(engine, "decode", overestimate)
    monkeypatch.setattr(engine, "residual_severity", blur_and_noise)
    model = DegradationAnalyzer(AnalyzerConfig(width=8, crop=64, max_crops=1, hidden=16))
    reasoner = engine.Reasoner(model)
    per, overall = reasoner.score(mildly_blurred[None])
    revised = reasoner.diagnose(mildly_blurred[None])[0].finding("blur").severity
    assert revised < 0.8 * claimed.severity
    assert float(per[0, b]) == pytest.approx(revised, abs=1e-6)
    assert float(per[0, TYPE_NAMES.index("noise")]) == pytest.approx(0.1)
    assert float(overall[0]) == pytest.approx(1 - (1 - revised) * 0.9, abs=1e-6)
    raw, _ = engine.Reasoner(model, detail_check=False).score(mildly_blurred[None])
    assert float(raw[0, b]) == pytest.approx(claimed.severity)


def test_bound_severities_scales_revised_types_and_zeroes_dropped_ones():
    per = torch.full((len(TYPE_NAMES),), 0.4)
    blur, low_res = _blur(3.0), Finding.from_params("low_resolution", {"scale": 3.0})
    before = Diagnosis.from_findings([blur, low_res])
    weaker = Finding.from_params("blur", {"width": 1.5}, 0.9, "analyzer")
    after = Diagnosis.from_findings([weaker])
    out = bound_severities(per, before, after)
    b, r = TYPE_NAMES.index("blur"), TYPE_NAMES.index("low_resolution")
    assert float(out[b]) == pytest.approx(0.4 * weaker.severity / blur.severity)
    assert float(out[r]) == 0.0
    others = [i for i in range(len(TYPE_NAMES)) if i not in (b, r)]
    assert torch.equal(out[others], per[others]) and torch.equal(per, torch.full_like(per, 0.4))
    assert torch.equal(bound_severities(per, before, before), per)
    user = Diagnosis.from_findings([_blur(3.0, source="user")])
    assert torch.equal(bound_severities(per, user, Diagnosis.from_findings([])), per)
    added = Finding.from_params("low_resolution", {"scale": 2.5}, 0.9, "analyzer")
    out = bound_severities(per, Diagnosis.from_findings([]),
                           Diagnosis.from_findings([added]))
    assert float(out[r]) == pytest.approx(added.severity * 0.9) and out[b] == per[b]


def test_a_vlm_reasoners_blur_meets_the_same_evidence(mildly_blurred):
    from reason_restore.reasoner.vlm.fusion import FusedReasoner

    class OverestimatingVLM:
        device, dtype, name, keep_loaded, model = "cpu", torch.float32, "vlm", True, None

        def diagnose(self, images, progress=None):
            return [Diagnosis.from_findings([_blur(3.5, source="vlm")])]

    d = FusedReasoner(None, OverestimatingVLM(), "vlm").diagnose(mildly_blurred[None])[0]
    # The spectrum measures the PSF (reasoner/psf.py) before the detail check would bound it.
    assert d.finding("blur").params["width"] == pytest.approx(1.0, abs=0.3)
    assert "spectrum shows" in d.chain_of_thought()


def test_detail_ratio_names_a_wrong_image_shape():
    with pytest.raises(ValueError, match="image: expected"):
        detail_ratio(torch.rand(1, 3, 64, 64), [_blur(1.0)])


def test_the_revision_keeps_the_chain_of_thought_it_revises(mildly_blurred):
    claimed = Diagnosis.from_findings([_blur(3.5)], observation="A test image.")
    claimed.reasoning[1].text += " Likely causes (VLM): blur: camera shake."
    steps = bound_by_detail(mildly_blurred, claimed).reasoning
    assert [s.stage for s in steps] == ["observation", "degradations", "degradations",
                                        "severity", "plan"]
    assert steps[1].text == claimed.reasoning[1].text  # what was detected, and the VLM's causes
    assert "detail ratio" in steps[2].text
    assert steps[3].text != claimed.reasoning[2].text  # severity as it now stands


def test_a_measured_scale_stays_and_only_the_guessed_findings_are_pulled(mildly_blurred):
    measured = Finding.from_params("low_resolution", {"scale": 3.0}, 0.9, "evidence")
    claimed = Diagnosis.from_findings([_blur(3.5), measured])
    bounded = bound_by_detail(mildly_blurred, claimed)
    assert bounded.finding("low_resolution") == measured
    assert bounded.finding("blur") is None or bounded.finding("blur").params["width"] < 3.5
    alone = Diagnosis.from_findings([measured])
    assert bound_by_detail(mildly_blurred, alone) is alone  # nothing guessed to pull
