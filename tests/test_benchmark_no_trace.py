"""benchmarks/no_trace.py: its change detection and tally against known values."""

import pytest

from _bench import load_benchmark
from reason_restore.reasoner.diagnosis import Diagnosis, Finding


def test_a_change_is_a_change_of_what_the_restorer_sees_and_the_tally_counts_it():
    bench = load_benchmark("no_trace.py", "bench_no_trace")
    blur = Finding.from_params("blur", {"width": 1.2}, 0.8)
    relabelled = Finding.from_params("blur", {"width": 1.2}, 0.5, "evidence")
    assert bench.reading(Diagnosis.from_findings([blur])) == bench.reading(
        Diagnosis.from_findings([relabelled]))  # confidence and source do not restore
    wider = Finding.from_params("blur", {"width": 1.5}, 0.8)
    assert bench.reading(Diagnosis.from_findings([blur])) != bench.reading(
        Diagnosis.from_findings([wider]))
    t = bench.tally([{"before": 30.0, "after": 32.0}, {"before": 40.0, "after": 39.5},
                     {"before": 20.0, "after": 20.0}])
    assert t["images"] == 3 and t["up"] == 1 and t["down"] == 1
    assert t["before"] == pytest.approx(30.0) and t["after"] == pytest.approx(30.5)
    assert t["worst"] == pytest.approx(-0.5)
    assert bench.tally([]) == {"images": 0}
    assert bench.summary([blur]) == f"blur {blur.severity:.2f}" and bench.summary([]) == "none"
