"""The command line, run in-process through main(argv) with tiny random models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from _tiny import make_models
from reason_restore.cli import main
from reason_restore.reasoner.diagnosis import Diagnosis


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return make_models(tmp_path_factory.mktemp("models"))


def write_png(path, h=24, w=32, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    arr = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    im = Image.fromarray(arr)
    if mode != "RGB":
        im = im.convert(mode)
    im.save(path)
    return path


def models_args(weights):
    return ["--analyzer", str(weights[0]), "--restorer", str(weights[1]), "--device", "cpu"]


def test_restore_writes_the_four_files(tmp_path, weights, capsys):
    src = write_png(tmp_path / "photo.png")
    out = tmp_path / "out"
    code = main(["restore", str(src), "-o", str(out), *models_args(weights),
                 "--overrides", "noise: severity=0.6", "--instruction", "crisp"])
    assert code == 0, capsys.readouterr().err
    for suffix in (".png", ".diagnosis.json", ".cot.txt", ".compare.png"):
        assert (out / f"photo{suffix}").is_file(), suffix
    restored = Image.open(out / "photo.png")
    assert restored.size == (32, 24)
    d = Diagnosis.from_json((out / "photo.diagnosis.json").read_text())
    assert d.finding("noise").source == "user"
    cot = (out / "photo.cot.txt").read_text()
    assert "[plan]" in cot and "positive:" in cot and "crisp" in cot
    compare = Image.open(out / "photo.compare.png")
    assert compare.width >= 2 * 32 and compare.height > 24  # side by side + text band
    band = np.asarray(compare.convert("L"))[24:]
    assert (band < 128).any()  # some text was drawn


def test_folder_input_with_a_corrupt_file(tmp_path, weights, capsys):
    src = tmp_path / "in"
    src.mkdir()
    write_png(src / "a.png", seed=1)
    (src / "b.jpg").write_bytes(b"this is not a jpeg")
    write_png(src / "c.png", h=9, w=16, seed=2, mode="RGBA")
    (src / "notes.txt").write_text("ignored: not an image suffix")
    out = tmp_path / "out"
    code = main(["restore", str(src), "-o", str(out), *models_args(weights), "--upscale",
                 "2", "--force-upscale"])
    err = capsys.readouterr().err
    assert code == 1
    failures = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(failures) == 1 and "b.jpg" in failures[0] and "not a readable image" in \
        failures[0]
    for name in ("a", "c"):
        for suffix in (".png", ".diagnosis.json", ".cot.txt", ".compare.png"):
            assert (out / f"{name}{suffix}").is_file()
    assert Image.open(out / "c.png").size == (32, 18)  # forced x2
    assert not (out / "b.png").exists()


def test_bad_arguments_fail_cleanly(tmp_path, weights, capsys):
    src = write_png(tmp_path / "x.png")
    code = main(["restore", str(src), "-o", str(tmp_path / "o"), *models_args(weights),
                 "--overrides", "blurr: off"])
    assert code == 2 and "--overrides: overrides part 1 'blurr: off'" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"junk")
    code = main(["restore", str(src), "-o", str(tmp_path / "o"), "--analyzer", str(bad),
                 "--device", "cpu"])
    assert code == 2 and "bad.safetensors: not a valid analyzer" in capsys.readouterr().err
    code = main(["restore", str(tmp_path / "missing.png"), "-o", str(tmp_path / "o"),
                 *models_args(weights)])
    assert code == 1 and "no such file" in capsys.readouterr().err


def test_diagnose_prints_text_and_json(tmp_path, weights, capsys):
    src = write_png(tmp_path / "x.png")
    assert main(["diagnose", str(src), "--analyzer", str(weights[0]), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "Diagnosis:" in text and "[observation]" in text
    assert main(["diagnose", str(src), "--json", "--analyzer", str(weights[0])]) == 0
    data = json.loads(capsys.readouterr().out)
    assert Diagnosis.from_dict(data).reasoning


def test_degrade_command(tmp_path, capsys):
    src = write_png(tmp_path / "clean.png", h=32, w=32)
    out, truth = tmp_path / "noisy.png", tmp_path / "noisy.json"
    args = ["degrade", str(src), "-o", str(out), "--spec", "noise: sigma=25", "--seed", "0",
            "--truth", str(truth)]
    assert main(args) == 0
    first = np.asarray(Image.open(out))
    assert main(args) == 0
    assert np.array_equal(first, np.asarray(Image.open(out)))  # deterministic
    assert Diagnosis.from_json(truth.read_text()).finding("noise").params["sigma"] == 25.0
    assert "noise" in capsys.readouterr().out
    assert main(["degrade", str(src), "-o", str(out), "--spec", "noise: sigma=99"]) == 2
    assert "--spec: spec[0].params.sigma" in capsys.readouterr().err


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("restore", "diagnose", "degrade"):
        assert cmd in out


def test_the_chain_of_thought_file_notes_a_reread_airlight():
    from reason_restore.cli import _airlight_notes

    class Restored:
        last_airlight = [(0, 0.9, 0.75), (1, 0.8, 0.8)]
    assert _airlight_notes(Restored()) == [
        "airlight 0.75, read where the veil is thick (the diagnosis said 0.90)"]
    assert _airlight_notes(object()) == []  # a backbone restorer has no veil
