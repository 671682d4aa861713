"""reasoner/exposure.py: the brightest level an image records bounds a low light's exposure."""

import numpy as np
import pytest
import torch

from reason_restore.reasoner.diagnosis import Diagnosis, Finding
from reason_restore.reasoner.engine import check_evidence
from reason_restore.reasoner.evidence import DROP_BELOW
from reason_restore.reasoner.exposure import bound_by_exposure, recorded_white
from reason_restore.reasoner.synthesis import degrade

from test_evidence import _photo_like, _tensor


def _low_light(exposure: float, gamma: float, source: str = "analyzer") -> Finding:
    return Finding.from_params("low_light", {"exposure": exposure, "gamma": gamma}, 0.9, source)


@pytest.mark.parametrize("spec", ["low_light: exposure=0.5, gamma=1.8",
                                  "low_light: exposure=0.5, gamma=1.8; noise: sigma=20",
                                  "low_light: exposure=0.3, gamma=1.2; noise: sigma=40, shot=20",
                                  "haze: beta=1.5, airlight=0.9; low_light: exposure=0.4, "
                                  "gamma=1.5; jpeg: quality=30"])
def test_the_recorded_white_is_a_lower_bound_of_the_exposure(spec):
    image, truth = degrade(_photo_like(), spec, seed=1)
    exposure = truth.finding("low_light").params["exposure"]
    white = recorded_white(_tensor(image), truth)
    assert 0.5 * exposure < white <= exposure + 0.01


def test_noise_lifts_the_bright_tail_unless_its_margin_is_taken():
    image, truth = degrade(_photo_like(), "low_light: exposure=0.3, gamma=1.2; "
                           "noise: sigma=40, shot=20", seed=1)
    assert recorded_white(_tensor(image)) > 0.35 > 0.3 > recorded_white(_tensor(image), truth)


def test_an_impossible_exposure_is_raised_to_the_recorded_white():
    image, _ = degrade(_photo_like(), "low_light: exposure=0.5, gamma=1.8", seed=1)
    x = _tensor(image)
    before = Diagnosis.from_findings([_low_light(0.3, 1.8)])
    after = bound_by_exposure(x, before)
    found = after.finding("low_light")
    assert found.params["exposure"] == pytest.approx(recorded_white(x), abs=1e-6)
    assert found.params["gamma"] == pytest.approx(1.8)
    assert found.severity < before.finding("low_light").severity
    assert any("brightest part of the image reads" in step.text for step in after.reasoning)


def test_a_possible_exposure_a_users_and_no_low_light_stay_as_they_are():
    image, _ = degrade(_photo_like(), "low_light: exposure=0.5, gamma=1.8", seed=1)
    x = _tensor(image)
    for d in (Diagnosis.from_findings([_low_light(0.6, 1.5)]),
              Diagnosis.from_findings([_low_light(0.2, 1.5, source="user")]),
              Diagnosis.from_findings([Finding.from_params("noise", {"sigma": 10.0})]),
              Diagnosis.from_findings([])):
        assert bound_by_exposure(x, d) is d


def test_a_false_low_light_on_a_bright_photo_goes():
    x = _tensor(np.clip(_photo_like() * 1.25, 0, 1))  # highlights at white
    after = bound_by_exposure(x, Diagnosis.from_findings([_low_light(0.6, 1.0)]))
    assert after.finding("low_light") is None
    kept = bound_by_exposure(x, Diagnosis.from_findings([_low_light(0.6, 2.5)]))
    assert kept.finding("low_light").severity >= DROP_BELOW  # gamma alone still darkens


def test_check_evidence_applies_the_bound():
    image, _ = degrade(_photo_like(), "low_light: exposure=0.5, gamma=1.8", seed=1)
    x = _tensor(image)
    after = check_evidence(x, Diagnosis.from_findings([_low_light(0.3, 1.8)]))
    assert after.finding("low_light").params["exposure"] > 0.35


def test_a_wrong_image_is_named():
    with pytest.raises(ValueError, match="image"):
        recorded_white(torch.zeros(4, 8, 8))
