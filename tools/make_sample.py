"""Rebuild ``assets/sample.jpg``, the bundled sample the README's commands run on.

It is a held-out photo (mate-backgrounds ``nature/LadyBird.jpg``, never seen in training),
area-downscaled 2x, then degraded by our own synthesiser: mild defocus, Gaussian noise
sigma 15, and saved as JPEG quality 40 (so it also carries real compression artefacts).

    python -m reason_restore.tools.data         # fetches the photos
    python -m reason_restore.tools.make_sample
"""

from pathlib import Path

import numpy as np
from PIL import Image

from ..reasoner.synthesis import degrade
from .data import default_cache

SPEC = "blur: width=1.0; noise: sigma=15"
OUT = Path(__file__).resolve().parents[1] / "assets" / "sample.jpg"


def main() -> None:
    im = Image.open(default_cache() / "photos" / "mate" / "LadyBird.png").convert("RGB")
    im = im.reduce(2)
    out, truth = degrade(np.asarray(im, dtype=np.float32) / 255.0, SPEC, seed=0)
    Image.fromarray((out * 255 + 0.5).astype(np.uint8)).save(OUT, quality=40)
    print(f"wrote {OUT}: {truth.summary()} + JPEG quality 40")


if __name__ == "__main__":
    main()
