"""benchmarks/veil.py: the true transmission, the swapped diagnosis, the re-read switch."""

import numpy as np

from _bench import load_benchmark

veil = load_benchmark("veil.py", "veil_benchmark")

from reason_restore.reasoner.diagnosis import Diagnosis, Finding  # noqa: E402
from reason_restore.reasoner.synthesis import Step, degrade  # noqa: E402
from reason_restore.restorer import consistency  # noqa: E402


def test_true_transmission_is_the_synthesisers():
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.0, 0.6, (32, 40, 3)).astype(np.float32)  # never at the airlight
    veiled, _ = degrade(clean, [Step("haze", {"beta": 1.5, "airlight": 0.9})], seed=3)
    t = veil.true_transmission(clean, veiled, 0.9)
    np.testing.assert_allclose(clean * t[..., None] + 0.9 * (1 - t[..., None]), veiled,
                               atol=1e-5)
    assert t.min() > np.exp(-1.5) - 1e-4 and t.max() < 1 + 1e-4
    assert t[0].mean() < t[-1].mean()  # the synthesiser's depth grows towards the top


def test_with_params_takes_only_the_named_keys_from_the_truth():
    found = Finding.from_params("haze", {"beta": 1.0, "airlight": 0.8})
    noise = Finding.from_params("noise", {"sigma": 10.0})
    truth = Diagnosis(findings=[Finding.from_params("haze", {"beta": 3.0, "airlight": 0.7})])
    got = veil.with_params(Diagnosis(findings=[found, noise]), truth, ("airlight",))
    assert got.finding("haze").params == {"beta": 1.0, "airlight": 0.7}
    assert got.finding("noise") is noise
    none = Diagnosis(findings=[noise])
    assert veil.with_params(none, truth, ("airlight",)) is none


def test_reread_switches_the_thick_window_airlight_off_and_back():
    saved = consistency.THICK_FRACTION
    with veil.reread(False):
        assert consistency.THICK_FRACTION == float("inf")
    assert consistency.THICK_FRACTION == saved
    with veil.reread(True):
        assert consistency.THICK_FRACTION == saved
