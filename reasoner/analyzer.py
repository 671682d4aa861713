"""The analyzer: the reasoner's fast path, a small CNN that predicts a structured diagnosis.

Its heads derive from the taxonomy: one presence logit per degradation type, and for every
(type, parameter) one classifier over that parameter's quantisation grid. A parameter's value
is the expectation over its bins (trained with two-hot targets, so the expectation is unbiased)
and its confidence is the probability mass near the mode. Because severity is a smooth
function of those expectations, ``residual_severity`` is differentiable: the restorer's reward
stage back-propagates through it.

It looks at native-resolution crops (noise, blur and JPEG blocks vanish when an image is
resized), aligned to the 8x8 JPEG grid, and averages their features.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .diagnosis import PRESENCE_THRESHOLD, Diagnosis, Finding
from .images import luma
from .taxonomy import TAXONOMY, TYPE_NAMES, get_type, param_slots

ARCH_NAME = "reason_restore.DegradationAnalyzer"


@dataclass
class AnalyzerConfig:
    width: int = 16
    crop: int = 128
    max_crops: int = 8
    hidden: int = 256
    # Pool statistics after every stage, not only the stem and the last one. Blur and low
    # resolution differ in how detail falls off from scale to scale, which the two ends alone
    # hide (they were the weakest types at 0.70 / 0.72 single-type F1 with the ends only).
    # False for weights trained before this option existed.
    pool_every_stage: bool = False
    # The taxonomy the heads were built for; loading checks it still matches.
    slots: tuple = ()

    def __post_init__(self):
        if self.crop < 64:  # five stride-2 stages: smaller crops leave a 1x1 map (std = NaN)
            raise ValueError(f"analyzer config: crop must be >= 64, got {self.crop}")
        if not self.slots:
            self.slots = tuple(f"{t}.{p.key}:{len(p.grid)}" for t, p in param_slots())
        self.slots = tuple(self.slots)

    @classmethod
    def from_dict(cls, d: dict) -> "AnalyzerConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"analyzer config: unknown keys {sorted(unknown)}")
        return cls(**d)


def high_pass(x: torch.Tensor) -> torch.Tensor:
    """x minus its 3x3 binomial blur, per channel."""
    k = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype)
    k = (k[:, None] * k[None]) / 16.0
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"),
                       k[None, None].expand(x.shape[1], 1, 3, 3), groups=x.shape[1])
    return x - blurred


class _Stage(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.down = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.body = nn.Sequential(nn.GroupNorm(4, cout), nn.GELU(),
                                  nn.Conv2d(cout, cout, 3, padding=1))

    def forward(self, x):
        x = self.down(x)
        return x + self.body(x)


class DegradationAnalyzer(nn.Module):
    def __init__(self, config: AnalyzerConfig | None = None):
        super().__init__()
        self.config = config = config or AnalyzerConfig()
        w = config.width
        # Full-resolution stem over the image and its high-pass residual: noise, JPEG blocking
        # and (missing) sharpness live there, but a randomly initialised conv sees mostly
        # content; handing it the residual made the difference between learning noise
        # presence in 20 steps and not at all in 60 (measured, sigma 25 vs clean).
        self.stem = nn.Sequential(nn.Conv2d(6, w, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(w, w, 3, padding=1), nn.GELU())
        chans = [w * 3 // 2, 2 * w, 3 * w, 4 * w, 4 * w]
        self.stages = nn.Sequential(*[_Stage(a, b) for a, b in zip([w] + chans[:-1], chans)])
        pooled = chans if config.pool_every_stage else chans[-1:]
        feat = 2 * (w + sum(pooled))  # mean + std of the stem and of the pooled stages
        self.trunk = nn.Sequential(nn.Linear(feat, config.hidden), nn.GELU(),
                                   nn.Linear(config.hidden, config.hidden), nn.GELU())
        self.presence = nn.Linear(config.hidden, len(TYPE_NAMES))
        self.param_heads = nn.ModuleList(nn.Linear(config.hidden, len(p.grid))
                                         for _, p in param_slots())

    def forward(self, crops: torch.Tensor) -> dict:
        """``crops``: [B, K, 3, c, c] in [0, 1]. Returns presence logits [B, T] and a list of
        parameter logits [B, bins] in ``param_slots()`` order."""
        if crops.dim() != 5 or crops.shape[2] != 3:
            raise ValueError(f"crops: expected [B, K, 3, H, W], got {list(crops.shape)}")
        b, k = crops.shape[:2]
        x = crops.flatten(0, 1)
        s = self.stem(torch.cat([x * 2.0 - 1.0, 8.0 * high_pass(x)], 1))
        maps = [s]
        for stage in self.stages:
            maps.append(stage(maps[-1]))
        if not self.config.pool_every_stage:
            maps = [maps[0], maps[-1]]
        # Log-std: degradation strength spans orders of magnitude (sigma 3 vs 50).
        stats = torch.cat([t for m in maps
                           for t in (m.mean((2, 3)), (m.std((2, 3)) + 1e-3).log())], 1)
        z = self.trunk(stats.view(b, k, -1).mean(1))
        return {"presence": self.presence(z), "params": [head(z) for head in self.param_heads]}


# --- crops ------------------------------------------------------------------------------

def make_crops(image: torch.Tensor, crop: int, max_crops: int) -> torch.Tensor:
    """Deterministic grid of native-resolution crops of one [3, H, W] image: [K, 3, c, c].

    Offsets are multiples of 8 so JPEG blocks keep their phase. Images smaller than a crop
    are edge-padded (their diagnosis is then less certain, which the confidence shows)."""
    _, h, w = image.shape
    if h < crop or w < crop:
        ph, pw = max(0, crop - h), max(0, crop - w)
        image = F.pad(image[None], (0, pw, 0, ph), mode="replicate")[0]
        h, w = image.shape[1:]
    ny = max(1, min(int(math.sqrt(max_crops * h / w) + 0.5), h // crop))
    nx = max(1, min(max_crops // ny, w // crop))
    ys = [round(i * (h - crop) / max(1, ny - 1)) // 8 * 8 for i in range(ny)] if ny > 1 else [
        (h - crop) // 2 // 8 * 8]
    xs = [round(i * (w - crop) / max(1, nx - 1)) // 8 * 8 for i in range(nx)] if nx > 1 else [
        (w - crop) // 2 // 8 * 8]
    return torch.stack([image[:, y:y + crop, x:x + crop] for y in ys for x in xs])


# --- decoding the heads into numbers ----------------------------------------------------

def _grids(device, dtype):
    return [torch.tensor(p.grid, device=device, dtype=dtype) for _, p in param_slots()]


def expected_params(outputs: dict) -> dict[str, dict[str, torch.Tensor]]:
    """Per type, per key: the expectation over grid bins ([B] tensors, differentiable)."""
    result: dict[str, dict[str, torch.Tensor]] = {t.name: {} for t in TAXONOMY}
    logits = outputs["params"]
    for (type_name, spec), lg, grid in zip(param_slots(), logits,
                                            _grids(logits[0].device, logits[0].dtype)):
        probs = lg.softmax(-1)
        if spec.circular:  # expectation on the circle, so 170 deg and 10 deg average to 0
            period = spec.high - spec.low
            ang = grid * (2 * math.pi / period)
            c, s = (probs * ang.cos()).sum(-1), (probs * ang.sin()).sum(-1)
            value = torch.atan2(s, c) % (2 * math.pi) * (period / (2 * math.pi))
        else:
            value = (probs * grid).sum(-1)
        result[type_name][spec.key] = value
    return result


def residual_severity(outputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable severity: per type presence probability x severity(expected params).

    Returns ([B, T] per type, [B] overall). This is the reward the restorer learns from."""
    presence = outputs["presence"].sigmoid()
    params = expected_params(outputs)
    per_type = torch.stack([presence[:, i] * get_type(n).severity(params[n])
                            for i, n in enumerate(TYPE_NAMES)], 1)
    return per_type, combined_severity(per_type)


def combined_severity(per_type: torch.Tensor) -> torch.Tensor:
    """[..., T] per-type severities -> [...] overall: the union ``1 - prod(1 - s)``, as
    ``taxonomy.overall_severity`` combines a diagnosis's findings."""
    return 1.0 - (1.0 - per_type).prod(-1)


def _param_confidence(probs: torch.Tensor) -> torch.Tensor:
    """Mass within one bin of the mode: 1.0 for a sharp, unimodal answer."""
    padded = F.pad(probs, (1, 1))
    window = padded.unfold(-1, 3, 1).sum(-1)
    return window.max(-1).values


def decode(outputs: dict, observations: list[str] | None = None,
           threshold: float = PRESENCE_THRESHOLD) -> list[Diagnosis]:
    presence = outputs["presence"].detach().sigmoid().float().cpu()
    params = {t: {k: v.detach().float().cpu() for k, v in d.items()}
              for t, d in expected_params(outputs).items()}
    pconf = [_param_confidence(lg.detach().float().softmax(-1)).cpu()
             for lg in outputs["params"]]
    slots = param_slots()
    diagnoses = []
    for b in range(presence.shape[0]):
        findings = []
        for i, name in enumerate(TYPE_NAMES):
            p = float(presence[b, i])
            if p < threshold:
                continue
            values = {k: float(v[b]) for k, v in params[name].items()}
            conf = {spec.key: float(pc[b]) for (t, spec), pc in zip(slots, pconf) if t == name}
            findings.append(Finding.from_params(name, values, p, "analyzer", conf))
        obs = observations[b] if observations else ""
        diagnoses.append(Diagnosis.from_findings(
            findings, presence={n: float(presence[b, i]) for i, n in enumerate(TYPE_NAMES)},
            sources={"findings": "analyzer"}, observation=obs))
    return diagnoses


def describe_image(image: torch.Tensor) -> str:
    """A plain observation of one [3, H, W] image for the chain of thought."""
    _, h, w = image.shape
    lum = luma(image).float()
    mean, std = float(lum.mean()), float(lum.std()) if lum.numel() > 1 else 0.0
    bright = "dark" if mean < 0.25 else "bright" if mean > 0.7 else "mid-toned"
    contrast = "low" if std < 0.12 else "high" if std > 0.28 else "moderate"
    return (f"A {w}x{h} image, {bright} (mean luminance {mean:.2f}) with {contrast} contrast "
            f"(std {std:.2f}).")


# --- loading and saving -----------------------------------------------------------------

def save_analyzer(model: DegradationAnalyzer, path, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file
    meta = {"arch": ARCH_NAME, "config": json.dumps(asdict(model.config))}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
              str(path), metadata=meta)


def load_analyzer(path, map_location="cpu") -> DegradationAnalyzer:
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: analyzer weights file not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for corrupt/truncated files
        raise ValueError(f"{path}: not a valid analyzer weights file ({e})") from None
    if meta.get("arch") != ARCH_NAME:
        raise ValueError(f"{path}: not a ReasonRestore analyzer (arch={meta.get('arch')!r})")
    config = AnalyzerConfig.from_dict(json.loads(meta.get("config", "{}")))
    current = AnalyzerConfig(width=config.width).slots
    if tuple(config.slots) != current:
        raise ValueError(f"{path}: trained for a different taxonomy (heads {config.slots}); "
                         f"retrain it for the current one ({current})")
    model = DegradationAnalyzer(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # missing/unexpected keys or wrong shapes
        raise ValueError(f"{path}: weights do not fit the analyzer: {str(e)[:400]}") from None
    return model.to(map_location).eval()
