"""benchmarks/psf.py: its parameter errors against known values."""

import pytest

from _bench import load_benchmark
from reason_restore.reasoner.diagnosis import Finding


def test_parameter_errors_wrap_the_angle_and_count_grid_steps():
    psf = load_benchmark("psf.py", "bench_psf")
    found = Finding.from_params("blur", {"width": 1.2, "motion_length": 9.0,
                                         "motion_angle": 175.0})
    err = psf.errors(found, {"width": 2.0, "motion_length": 12.0, "motion_angle": 5.0})
    assert err["width"] == pytest.approx(0.8) and err["width_step"] == 0.0  # grid step 0.5 px
    assert err["motion_length"] == pytest.approx(3.0) and err["motion_length_step"] == 0.0
    assert err["motion_angle"] == pytest.approx(10.0) and err["motion_angle_step"] == 1.0
    short = psf.errors(found, {"width": 1.0, "motion_length": 1.0, "motion_angle": 90.0})
    assert "motion_angle" not in short  # a 1 px segment has no direction worth scoring
    assert short["width_step"] == 1.0 and short["motion_length_step"] == 0.0
