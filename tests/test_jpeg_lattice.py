"""reasoner/jpeg_lattice.py: JPEG's quantisation lattice sets the quality a diagnosis reports."""

import pytest
import torch

from reason_restore.reasoner.diagnosis import Diagnosis, Finding
from reason_restore.reasoner.engine import check_evidence
from reason_restore.reasoner.evidence import bound_severities
from reason_restore.reasoner.jpeg_lattice import (LATTICE_LIMIT, bound_by_jpeg_lattice,
                                                  luma_table, measure_quality)
from reason_restore.reasoner.synthesis import degrade, jpeg_roundtrip
from reason_restore.reasoner.taxonomy import TYPE_NAMES

from test_evidence import _photo_like, _tensor


def _jpeg(quality: int, size: int = 256, noise: float = 0.0) -> torch.Tensor:
    img = _photo_like(size)
    if noise:
        img, _ = degrade(img, f"noise: sigma={noise}", seed=2)
    return _tensor(jpeg_roundtrip(img, quality))


def _finding(quality: float, source: str = "analyzer") -> Finding:
    return Finding.from_params("jpeg", {"quality": quality}, 0.8, source)


def test_the_tables_are_libjpegs():
    assert luma_table(50)[:8].tolist() == [16, 11, 10, 16, 24, 40, 51, 61]  # Annex K as is
    assert luma_table(100).eq(1).all() and luma_table(1).max() == 255       # baseline limits
    assert luma_table(25)[0] == 32 and luma_table(75)[0] == 8               # scaled 2x and x0.5
    with pytest.raises(ValueError, match="quality"):
        luma_table(0)


@pytest.mark.parametrize("quality, noise", [(12, 0), (37, 0), (63, 5), (88, 0), (94, 10)])
def test_a_jpeg_reads_its_exact_quality(quality, noise):
    fit = measure_quality(_jpeg(quality, noise=noise))
    assert fit.quality == quality
    assert fit.coherence > LATTICE_LIMIT and fit.support > 1000


@pytest.mark.parametrize("image", ["clean", "noisy", "off the grid", "resized"])
def test_no_lattice_without_a_jpeg_on_the_grid(image):
    if image == "clean":
        x = _tensor(_photo_like())
    elif image == "noisy":
        x = _tensor(degrade(_photo_like(), "noise: sigma=8", seed=3)[0])
    elif image == "off the grid":  # cropped by 3 px after saving
        x = _jpeg(40, size=259)[:, 3:, 3:]
    else:
        x = _tensor(degrade(jpeg_roundtrip(_photo_like(), 40), "low_resolution: scale=1.5",
                            seed=1)[0])
    assert measure_quality(x).coherence < LATTICE_LIMIT
    claimed = Diagnosis.from_findings([_finding(40)])
    assert bound_by_jpeg_lattice(x, claimed) is claimed


def test_large_images_are_read_in_a_region_on_the_grid():
    img = _photo_like(520)
    wide = torch.cat([_tensor(img), _tensor(img)[:, :, :500]], 2)[:, :, :1003]  # 520 x 1003
    saved = _tensor(jpeg_roundtrip(wide.permute(1, 2, 0).numpy(), 45))
    assert measure_quality(saved).quality == 45
    assert measure_quality(torch.zeros(3, 7, 100)) is None
    with pytest.raises(ValueError, match="image"):
        measure_quality(torch.zeros(1, 64, 64))


def test_the_lattice_sets_the_quality_and_adds_a_missed_jpeg():
    x = _jpeg(33)
    fixed = bound_by_jpeg_lattice(x, Diagnosis.from_findings([_finding(60)],
                                                             observation="A test image."))
    jpeg = fixed.finding("jpeg")
    assert jpeg.params["quality"] == 33 and jpeg.source == "evidence"
    assert "quantisation lattice for quality 33" in fixed.chain_of_thought()
    blur = Finding.from_params("blur", {"width": 1.0}, 0.9)
    added = bound_by_jpeg_lattice(x, Diagnosis.from_findings([blur]))
    assert added.finding("jpeg").params["quality"] == 33
    assert added.finding("blur") is not None  # the other findings stay


def test_a_light_jpeg_goes_and_a_users_jpeg_stays():
    light = _jpeg(94)  # severity (95 - 94) / 85: nothing worth removing
    assert bound_by_jpeg_lattice(light, Diagnosis.from_findings([_finding(50)])).finding(
        "jpeg") is None
    bare = Diagnosis.from_findings([])
    assert bound_by_jpeg_lattice(light, bare) is bare
    user = Diagnosis.from_findings([_finding(80, source="user")])
    assert bound_by_jpeg_lattice(_jpeg(33), user) is user


def test_check_evidence_takes_the_measured_quality_and_the_severity_score_does_not():
    x = _jpeg(25)
    before = Diagnosis.from_findings([_finding(70)])
    after = check_evidence(x, before)
    assert after.finding("jpeg").params["quality"] == 25
    # The lattice says how the file was saved, not what a restoration left visible.
    per = torch.full((len(TYPE_NAMES),), 0.3)
    assert torch.equal(bound_severities(per, before, after), per)
