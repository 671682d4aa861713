"""benchmarks/selection.py: candidates scored on training-source photos only, end to end on a
fake cache with tiny restorers."""

import numpy as np
import pytest

from _bench import heldout_cache, load_benchmark
from _tiny import make_models


def test_selection_scores_candidates_on_training_sources_only(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    cache = heldout_cache(tmp_path / "cache", [rng.integers(0, 256, (64, 64, 3))], monkeypatch)
    train = cache / "photos" / "lomiri"  # a training source (tools/data.py)
    train.mkdir(parents=True)
    from PIL import Image
    y, x = np.mgrid[0:64, 0:64]
    smooth = np.stack([x * 4, y * 4, (x + y) * 2], -1).astype(np.uint8)
    Image.fromarray(smooth).save(train / "photo0.png")
    analyzer, tiny = make_models(tmp_path / "models")
    selection = load_benchmark("selection.py", "bench_selection")
    out = tmp_path / "selection.md"
    assert selection.main(["--restorers", f"a={tiny}", f"b={tiny}", "--cases", "jpeg/mild",
                           "--photos", "1", "--size", "64", "--out", str(out)]) == 0
    text = out.read_text()
    assert "lomiri" in text and "mate" not in text
    row = next(line for line in text.splitlines() if line.startswith("| jpeg/mild |"))
    cells = [float(c) for c in row.strip("|").split("|")[1:]]
    assert len(cells) == 4 and cells[0] == cells[1] and cells[2] == cells[3]  # same weights
    assert all(5 < c < 80 for c in cells)
    # An analyzer candidate changes the predicted diagnosis, never the true-diagnosis cells.
    assert selection.main(["--analyzer", str(analyzer), "--restorers", f"a={tiny}",
                           "--cases", "jpeg/mild", "--photos", "1", "--size", "64",
                           "--out", str(out)]) == 0
    row = next(line for line in out.read_text().splitlines() if line.startswith("| jpeg/mild |"))
    assert float(row.strip("|").split("|")[2]) == cells[2]
    with pytest.raises(SystemExit):
        selection.main(["--restorers", f"c={tmp_path / 'missing.safetensors'}"])
