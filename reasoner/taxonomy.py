"""The degradation taxonomy: the single source of truth.

Degradation understanding is structured prediction: *type* -> *parameter key* -> *value on a
quantised grid*. Everything else in the pack derives from the tables below: the synthesiser
applies these parameters, the analyzer has one presence logit per type and one classifier per
(type, key) over its grid, the diagnosis schema validates against the ranges, prompts list the
types and keys, and reports phrase severity with the tiers.

Pure Python on purpose (no torch/numpy at import): ComfyUI imports every pack at start-up and
node definitions read this module to build their dropdowns. The severity functions accept
floats *or* torch tensors (only ``+ - * /``, ``clamp01`` and ``exp`` are used), so the
restorer's reward stage can differentiate through them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

__all__ = [
    "ParamSpec", "DegradationType", "TAXONOMY", "TYPE_NAMES", "TIERS",
    "get_type", "tier_of", "severity_of", "overall_severity", "param_slots",
    "clamp01", "exp",
]

TIERS = ("mild", "moderate", "severe")
# A tier is read off the normalised severity: [0, 1/3) mild, [1/3, 2/3) moderate, else severe.
_TIER_EDGES = (1.0 / 3.0, 2.0 / 3.0)


def clamp01(x):
    """Clamp to [0, 1] for floats and torch tensors alike."""
    if hasattr(x, "clamp"):
        return x.clamp(0.0, 1.0)
    return min(1.0, max(0.0, float(x)))


def exp(x):
    if hasattr(x, "exp"):
        return x.exp()
    return math.exp(float(x))


@dataclass(frozen=True)
class ParamSpec:
    """One physical parameter of a degradation type.

    ``grid`` is the quantisation used by the analyzer's classifier heads and by reports
    ("within one grid step"); ``identity`` is the value at which the degradation does nothing.
    """

    key: str
    unit: str
    low: float
    high: float
    grid: tuple[float, ...]
    identity: float
    description: str
    # Circular parameters (angles) wrap around; their error is measured modulo ``high - low``.
    circular: bool = False

    def clip(self, value: float) -> float:
        return min(self.high, max(self.low, float(value)))

    def nearest_bin(self, value: float) -> int:
        return min(range(len(self.grid)), key=lambda i: abs(self.grid[i] - value))

    def step(self) -> float:
        """Typical grid spacing, for "within one step" accuracy."""
        return (self.grid[-1] - self.grid[0]) / max(1, len(self.grid) - 1)


@dataclass(frozen=True)
class DegradationType:
    name: str
    label: str
    params: tuple[ParamSpec, ...]
    # params -> normalised severity in [0, 1]; missing keys take their identity value.
    severity_fn: Callable[[Mapping[str, float]], float]
    # Where this degradation sits in image formation (scene -> optics -> sensor -> codec); the
    # synthesiser applies mixtures in this order and the restoration plan undoes it in reverse.
    formation_order: int
    restore_verb: str  # used in chain-of-thought plans and prompts: "denoise", "deblur", ...
    clean_words: str   # positive-prompt phrase of a diffusion sampler once this is removed
    artefact_words: str  # negative-prompt phrase describing the artefact itself
    sample_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(p.key for p in self.params)

    def param(self, key: str) -> ParamSpec:
        for p in self.params:
            if p.key == key:
                return p
        raise KeyError(f"degradation type {self.name!r} has no parameter {key!r}; "
                       f"expected one of {list(self.keys)}")

    def identity_params(self) -> dict[str, float]:
        return {p.key: p.identity for p in self.params}

    def strongest_params(self) -> dict[str, float]:
        """The worst level we synthesise: each sampled key at the end of its range farthest
        from the identity (low quality for JPEG, low exposure for low light, ...)."""
        params = self.identity_params()
        for key, (lo, hi) in self.sample_ranges.items():
            spec = self.param(key)
            if not spec.circular and key != "angle":
                params[key] = lo if abs(lo - spec.identity) > abs(hi - spec.identity) else hi
        return params

    def params_for_severity(self, target: float) -> dict[str, float]:
        """Parameters on the line from "none" to the strongest synthesised level whose severity
        is ``target`` (bisection; severity is monotone along that line). Used when a user or a
        model gives a severity without parameters."""
        lo_p, hi_p = self.identity_params(), self.strongest_params()

        def at(a):
            return {k: lo_p[k] + a * (hi_p[k] - lo_p[k]) for k in lo_p}
        a, b = 0.0, 1.0
        for _ in range(40):
            m = (a + b) / 2
            if float(self.severity(at(m))) < target:
                a = m
            else:
                b = m
        return {k: self.param(k).clip(v) for k, v in at((a + b) / 2).items()}

    def severity(self, params: Mapping[str, float]):
        full = {**self.identity_params(), **params}
        return clamp01(self.severity_fn(full))


def _grid(low: float, high: float, n: int) -> tuple[float, ...]:
    return tuple(round(low + (high - low) * i / (n - 1), 4) for i in range(n))


# --- severity functions: calibrated so that 1.0 is about the worst level we synthesise -----

def _noise_sev(p):
    # Effective std at mid-grey: variance of the Poisson part is shot^2 * x with x ~ 0.5.
    var = p["sigma"] * p["sigma"] + 0.5 * p["shot"] * p["shot"]
    return (var + 1e-6) ** 0.5 / 50.0


def _blur_sev(p):
    # Spread of the PSF: Gaussian std plus the std of a uniform motion segment (L / sqrt(12)).
    m = p["motion_length"] / 3.4641
    return ((p["width"] * p["width"] + m * m) + 1e-6) ** 0.5 / 4.0


def _jpeg_sev(p):
    return (95.0 - p["quality"]) / 85.0


def _haze_sev(p):
    # Mean veil: 1 - transmission at mid depth, weighted by how bright the airlight is.
    return (1.0 - exp(-p["beta"] * 0.5)) * p["airlight"] / (1.0 - math.exp(-1.5))


def _rain_sev(p):
    return p["density"] * p["length"] / (0.03 * 30.0)


def _low_light_sev(p):
    # Brightness left at mid-grey after exposure and gamma: 0.5^gamma * exposure.
    remaining = exp(-0.6931 * p["gamma"]) * p["exposure"] / 0.5
    return (1.0 - remaining) / 0.9


def _low_res_sev(p):
    return (p["scale"] - 1.0) / 3.0


TAXONOMY: tuple[DegradationType, ...] = (
    DegradationType(
        name="haze", label="Haze",
        params=(
            ParamSpec("beta", "1/depth", 0.0, 3.0, _grid(0.0, 3.0, 7), 0.0,
                      "scattering coefficient of the atmospheric model I = J t + A (1 - t), "
                      "t = exp(-beta d) with a depth proxy d in [0, 1]"),
            ParamSpec("airlight", "intensity", 0.5, 1.0, _grid(0.5, 1.0, 6), 1.0,
                      "brightness A of the atmospheric light"),
        ),
        severity_fn=_haze_sev, formation_order=0, restore_verb="dehaze",
        clean_words="clear air, crisp distant detail, vivid contrast",
        artefact_words="haze, fog, washed-out contrast",
        sample_ranges={"beta": (0.2, 3.0), "airlight": (0.7, 1.0)},
    ),
    DegradationType(
        name="rain", label="Rain",
        params=(
            ParamSpec("density", "streaks/px", 0.0, 0.03, _grid(0.0, 0.03, 7), 0.0,
                      "fraction of pixels that start a rain streak"),
            ParamSpec("length", "px", 0.0, 40.0, _grid(0.0, 40.0, 9), 0.0,
                      "streak length"),
            ParamSpec("angle", "deg", -45.0, 45.0, _grid(-45.0, 45.0, 7), 0.0,
                      "streak angle from vertical"),
        ),
        severity_fn=_rain_sev, formation_order=1, restore_verb="derain",
        clean_words="dry clear scene",
        artefact_words="rain streaks, water drops",
        sample_ranges={"density": (0.004, 0.03), "length": (8.0, 40.0), "angle": (-30.0, 30.0)},
    ),
    DegradationType(
        name="low_light", label="Low light",
        params=(
            ParamSpec("exposure", "gain", 0.1, 1.0, _grid(0.1, 1.0, 10), 1.0,
                      "linear exposure gain applied after the tone curve"),
            ParamSpec("gamma", "exponent", 1.0, 3.0, _grid(1.0, 3.0, 9), 1.0,
                      "tone-curve exponent (x ** gamma) darkening shadows"),
        ),
        severity_fn=_low_light_sev, formation_order=2, restore_verb="brighten",
        clean_words="well exposed, balanced lighting, visible shadow detail",
        artefact_words="underexposed, dark, crushed shadows",
        sample_ranges={"exposure": (0.15, 0.9), "gamma": (1.0, 2.5)},
    ),
    DegradationType(
        name="blur", label="Blur",
        params=(
            ParamSpec("width", "px", 0.0, 4.0, _grid(0.0, 4.0, 9), 0.0,
                      "Gaussian/defocus blur standard deviation"),
            ParamSpec("motion_length", "px", 0.0, 20.0, _grid(0.0, 20.0, 11), 0.0,
                      "linear motion blur length"),
            ParamSpec("motion_angle", "deg", 0.0, 180.0, _grid(0.0, 150.0, 6), 0.0,
                      "motion direction", circular=True),
        ),
        severity_fn=_blur_sev, formation_order=3, restore_verb="deblur",
        clean_words="sharp focus, fine detail",
        artefact_words="blurry, out of focus, motion blur",
        sample_ranges={"width": (0.6, 4.0), "motion_length": (0.0, 20.0),
                       "motion_angle": (0.0, 180.0)},
    ),
    DegradationType(
        name="low_resolution", label="Low resolution",
        params=(
            ParamSpec("scale", "x", 1.0, 4.0, _grid(1.0, 4.0, 7), 1.0,
                      "downsampling factor (the image was captured this many times smaller "
                      "and upsampled)"),
        ),
        severity_fn=_low_res_sev, formation_order=4, restore_verb="super-resolve",
        clean_words="high resolution, fine texture",
        artefact_words="pixelated, low resolution, upscaled",
        sample_ranges={"scale": (1.5, 4.0)},
    ),
    DegradationType(
        name="noise", label="Noise",
        params=(
            ParamSpec("sigma", "0-255", 0.0, 50.0, _grid(0.0, 50.0, 11), 0.0,
                      "standard deviation of additive Gaussian read noise on the 0-255 scale"),
            ParamSpec("shot", "0-255", 0.0, 40.0, _grid(0.0, 40.0, 5), 0.0,
                      "signal-dependent (Poisson-like) noise: std at full white on the "
                      "0-255 scale, scaling with sqrt(intensity)"),
        ),
        severity_fn=_noise_sev, formation_order=5, restore_verb="denoise",
        clean_words="clean, noise-free, smooth gradients",
        artefact_words="noise, grain, speckles",
        sample_ranges={"sigma": (3.0, 50.0), "shot": (0.0, 40.0)},
    ),
    DegradationType(
        name="jpeg", label="JPEG",
        params=(
            ParamSpec("quality", "QF", 5.0, 95.0, _grid(5.0, 95.0, 10), 95.0,
                      "JPEG quality factor"),
        ),
        severity_fn=_jpeg_sev, formation_order=6, restore_verb="remove compression artefacts",
        clean_words="artefact-free, smooth edges",
        artefact_words="jpeg artifacts, blocking, ringing",
        sample_ranges={"quality": (8.0, 85.0)},
    ),
)

TYPE_NAMES: tuple[str, ...] = tuple(t.name for t in TAXONOMY)
_BY_NAME = {t.name: t for t in TAXONOMY}


def get_type(name: str) -> DegradationType:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown degradation type {name!r}; expected one of "
                       f"{list(TYPE_NAMES)}") from None


def param_slots() -> tuple[tuple[str, ParamSpec], ...]:
    """Every (type, parameter) pair in a fixed order: one analyzer head each."""
    return tuple((t.name, p) for t in TAXONOMY for p in t.params)


def severity_of(type_name: str, params: Mapping[str, float]):
    return get_type(type_name).severity(params)


def tier_of(severity: float) -> str:
    s = float(severity)
    if s < _TIER_EDGES[0]:
        return TIERS[0]
    if s < _TIER_EDGES[1]:
        return TIERS[1]
    return TIERS[2]


def overall_severity(severities) -> float:
    """Combine per-type severities: probability-style union, 1 - prod(1 - s).

    Two moderate degradations are worse than either alone, and no sum exceeds 1.
    """
    remaining = 1.0
    for s in severities:
        remaining = remaining * (1.0 - s)
    return 1.0 - remaining
