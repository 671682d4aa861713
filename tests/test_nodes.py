"""The ComfyUI nodes, run without ComfyUI: definitions, end-to-end runs with tiny random models,
and the bad inputs a user will eventually wire in."""

from __future__ import annotations

import inspect
import json
import math
import os
import sys
import types

import pytest
import torch

from _tiny import ANALYZER_NAME, RESTORER_NAME, make_models
from reason_restore import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from reason_restore.nodes import comfy
from reason_restore.nodes.types import CUSTOM_TYPES
from reason_restore.reasoner.diagnosis import Diagnosis, DiagnosisError, Finding
from reason_restore.reasoner.taxonomy import TAXONOMY, TYPE_NAMES

CORE_TYPES = {"IMAGE", "STRING", "FLOAT", "INT", "BOOLEAN"}
DISPLAY_NAMES = {"Diagnose Degradation", "Build Prior Prompt", "Reference Synthesize",
                 "Restore", "Severity Score", "Load Reasoner", "Load Restorer",
                 "Degrade Image", "Load Restorer Backbone", "Closed-Loop Restore"}


def node(display_name):
    for key, name in NODE_DISPLAY_NAME_MAPPINGS.items():
        if name == display_name:
            return NODE_CLASS_MAPPINGS[key]()
    raise KeyError(display_name)


def run(display_name, **kwargs):
    obj = node(display_name)
    out = getattr(obj, obj.FUNCTION)(**kwargs)
    if isinstance(out, dict):
        return out["result"]
    return out


def img(b=1, h=32, w=48, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, h, w, c, generator=g)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    make_models(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REASON_RESTORE_MODELS", str(root))
        yield root


@pytest.fixture(scope="module")
def reasoner(models):
    return run("Load Reasoner", model_name=ANALYZER_NAME, device="cpu", dtype="float32",
               keep_loaded=True)[0]


@pytest.fixture(scope="module")
def restorer(models):
    return run("Load Restorer", model_name=RESTORER_NAME, device="cpu", dtype="float32",
               keep_loaded=True)[0]


def diag(**types_params):
    findings = [Finding.from_params(t, p, 1.0, "user") for t, p in types_params.items()]
    return Diagnosis.from_findings(findings)


# --- definitions --------------------------------------------------------------------------

def test_display_names_and_keys():
    # The pack's nodes are all there (other node families may add more), names unique.
    assert DISPLAY_NAMES <= set(NODE_DISPLAY_NAME_MAPPINGS.values())
    assert len(set(NODE_DISPLAY_NAME_MAPPINGS.values())) == len(NODE_DISPLAY_NAME_MAPPINGS)
    assert set(NODE_DISPLAY_NAME_MAPPINGS) == set(NODE_CLASS_MAPPINGS)
    assert all(k.startswith("RR") for k in NODE_CLASS_MAPPINGS)


@pytest.mark.parametrize("key", sorted(NODE_CLASS_MAPPINGS))
def test_node_definition_is_consistent(key):
    cls = NODE_CLASS_MAPPINGS[key]
    assert cls.CATEGORY == "ReasonRestore"
    assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 40
    fn = getattr(cls, cls.FUNCTION)
    assert callable(fn)
    assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
    assert all(isinstance(t, str) and t for t in cls.OUTPUT_TOOLTIPS)
    for t in cls.RETURN_TYPES:
        assert t in CORE_TYPES or t in CUSTOM_TYPES, t
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"}
    params = inspect.signature(fn).parameters
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            kind, opts = entry[0], entry[1]
            assert isinstance(opts.get("tooltip"), str) and len(opts["tooltip"]) > 10, name
            assert isinstance(kind, list) or kind in CORE_TYPES or kind in CUSTOM_TYPES
            if isinstance(kind, list):
                assert opts.get("default", kind[0]) in kind
            assert name in params, f"{key}.{cls.FUNCTION} lacks parameter {name}"
            if section == "optional":
                assert params[name].default is not inspect.Parameter.empty, name
            if kind in ("INT", "FLOAT"):
                assert opts["min"] <= opts["default"] <= opts["max"]


def test_severity_outputs_follow_the_taxonomy():
    cls = NODE_CLASS_MAPPINGS["RRSeverityScore"]
    names = cls.RETURN_NAMES
    assert names[:len(TYPE_NAMES)] == tuple(f"{n}_severity" for n in TYPE_NAMES)
    assert names[len(TYPE_NAMES):] == ("overall", "report", "psnr", "ssim")


def test_spec_and_override_tooltips_list_the_taxonomy():
    spec_tip = NODE_CLASS_MAPPINGS["RRDegradeImage"].INPUT_TYPES()["required"]["spec"][1]
    over_tip = NODE_CLASS_MAPPINGS["RRBuildPriorPrompt"].INPUT_TYPES()["required"][
        "overrides"][1]
    for t in TAXONOMY:
        for tip in (spec_tip["tooltip"], over_tip["tooltip"]):
            assert t.name in tip
            for p in t.params:
                assert p.key in tip


def test_reference_synthesize_describes_its_diffusion_input_honestly():
    cls = NODE_CLASS_MAPPINGS["RRReferenceSynthesize"]
    assert "diffusion" in cls.INPUT_TYPES()["optional"]
    # The built-in restorer has no trained reference-aware blocks: the node must say so.
    assert "ignores the reference" in cls.DESCRIPTION


# --- end to end ---------------------------------------------------------------------------

def test_pipeline_end_to_end(reasoner, restorer):
    image = img(h=40, w=56)
    diagnoses, cot, js = run("Diagnose Degradation", reasoner=reasoner, image=image)
    assert len(diagnoses) == 1 and isinstance(diagnoses[0], Diagnosis)
    assert "[plan]" in cot and cot.startswith("Diagnosis:")
    assert Diagnosis.from_json(js).to_dict() == diagnoses[0].to_dict()

    prior, pos, neg, denoise, steps, cfg, seed = run(
        "Build Prior Prompt", diagnosis=diagnoses, overrides="noise: severity=0.8; blur: off",
        instruction="warm tones")
    assert "warm tones" in pos and "noise" in neg
    assert prior.diagnoses[0].finding("noise").source == "user"
    assert prior.diagnoses[0].finding("blur") is None
    assert 0.15 <= denoise <= 0.65 and isinstance(steps, int) and isinstance(cfg, float)
    assert seed == 0

    (ref,) = run("Reference Synthesize", prior=prior, image=image)
    assert ref is image
    (out,) = run("Restore", restorer=restorer, image=image, upscale=1.0, strength=1.0,
                 tile=512, overlap=32, force_upscale=False, prior=prior, reference=ref)
    assert out.shape == image.shape and out.dtype == torch.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0

    result = run("Severity Score", reasoner=reasoner, image=out)
    assert len(result) == len(TYPE_NAMES) + 4
    assert all(0.0 <= v <= 1.0 for v in result[:len(TYPE_NAMES) + 1])
    report, psnr, ssim = result[-3:]
    assert psnr == -1.0 and ssim == -1.0 and "no clean_reference" in report


def test_severity_score_with_clean_reference(reasoner):
    image = img(h=24, w=24)
    obj = node("Severity Score")
    out = obj.score(reasoner=reasoner, image=image, clean_reference=image.clone())
    assert out["ui"]["text"][0] == out["result"][-3]
    psnr, ssim = out["result"][-2:]
    assert math.isinf(psnr) and ssim == pytest.approx(1.0)
    noisy = (image + 0.1).clamp(0, 1)
    psnr2 = run("Severity Score", reasoner=reasoner, image=noisy, clean_reference=image)[-2]
    assert 15.0 < psnr2 < 60.0
    with pytest.raises(ValueError, match=r"Severity Score: clean_reference: its size 24x20 "
                                         r"differs from image's 24x24"):
        run("Severity Score", reasoner=reasoner, image=image, clean_reference=img(h=20, w=24))


def test_degrade_image_is_deterministic_with_ground_truth():
    image = img(b=1, h=32, w=32).expand(2, -1, -1, -1)
    a, truth = run("Degrade Image", image=image, spec="noise: sigma=25; jpeg: quality=30",
                   seed=3)
    b, _ = run("Degrade Image", image=image, spec="noise: sigma=25; jpeg: quality=30", seed=3)
    assert a.shape == image.shape and torch.equal(a, b)
    assert not torch.equal(a[0], a[1])  # image i uses seed + i
    assert len(truth) == 2 and truth[0].types == ["noise", "jpeg"]
    assert truth[0].finding("noise").params["sigma"] == 25.0
    with pytest.raises(ValueError, match=r"Degrade Image: spec\[0\]\.params\.sigma"):
        run("Degrade Image", image=image, spec="noise: sigma=900", seed=0)
    with pytest.raises(ValueError, match=r"spec\[0\]\.type: unknown degradation 'nosie'"):
        run("Degrade Image", image=image, spec='[{"type": "nosie"}]', seed=0)


def test_ground_truth_feeds_the_prior(restorer):
    image = img(h=32, w=32)
    degraded, truth = run("Degrade Image", image=image, spec="low_resolution: scale=2",
                          seed=0)
    prior = run("Build Prior Prompt", diagnosis=truth, overrides="")[0]
    (up,) = run("Restore", restorer=restorer, image=degraded, upscale=2.0, strength=1.0,
                tile=512, overlap=32, force_upscale=False, prior=prior)
    assert up.shape == (1, 64, 64, 3)


def test_upscale_only_when_low_resolution_unless_forced(restorer):
    image = img(h=16, w=24)
    clean = [diag(noise={"sigma": 20.0})]
    lowres = [diag(low_resolution={"scale": 2.0})]
    kw = dict(restorer=restorer, image=image, upscale=2.0, strength=1.0, tile=512, overlap=32)
    assert run("Restore", **kw, force_upscale=False, diagnosis=clean)[0].shape[1:3] == (16, 24)
    assert run("Restore", **kw, force_upscale=True, diagnosis=clean)[0].shape[1:3] == (32, 48)
    assert run("Restore", **kw, force_upscale=False, diagnosis=lowres)[0].shape[1:3] == (32, 48)
    # blind restoration: the user's factor applies
    assert run("Restore", **kw, force_upscale=False)[0].shape[1:3] == (32, 48)


def test_data_consistency_toggle_reaches_the_restorer(restorer):
    # The tiny test restorer is random: with the step on, a diagnosed blur pulls its output
    # to the input's content (closer to the input than the network's own output).
    image = img(h=32, w=32)
    blurred, truth = run("Degrade Image", image=image, spec="blur: width=1.5", seed=0)
    kw = dict(restorer=restorer, image=blurred, upscale=1.0, strength=1.0, tile=512,
              overlap=32, force_upscale=False, diagnosis=truth)
    (off,) = run("Restore", **kw, data_consistency=False)
    (on,) = run("Restore", **kw)
    assert (on - blurred).abs().mean() < (off - blurred).abs().mean()
    # ComfyUI executes every node under torch.inference_mode() (execution.py), where the
    # step's autograd adjoints would fail unless it leaves that mode.
    with torch.inference_mode():
        (inside,) = run("Restore", **kw)
    assert torch.allclose(inside, on)


def test_strength_zero_returns_the_input(restorer):
    image = img(h=16, w=16)
    (out,) = run("Restore", restorer=restorer, image=image, upscale=1.0, strength=0.0,
                 tile=512, overlap=32, force_upscale=False)
    assert torch.allclose(out, image, atol=1e-6)


def test_reference_synthesize_resizes_a_wired_reference(restorer):
    image = img(b=2, h=20, w=30)
    prior = run("Build Prior Prompt", diagnosis=[diag()], overrides="")[0]
    (ref,) = run("Reference Synthesize", prior=prior, image=image,
                 reference=img(b=1, h=40, w=60, c=4))
    assert ref.shape == (2, 20, 30, 3)
    with pytest.raises(ValueError, match="reference: batch of 3"):
        run("Reference Synthesize", prior=prior, image=image, reference=img(b=3))
    with pytest.raises(TypeError, match="prior: expected a RR_PRIOR"):
        run("Reference Synthesize", prior="nope", image=image)


# --- awkward images -------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 24, 24, 4), (1, 24, 24, 1), (4, 16, 16, 3),
                                   (1, 1, 1, 3), (1, 9, 16, 3), (1, 16, 9, 3)],
                         ids=["rgba", "gray", "batch4", "1x1", "16x9", "9x16"])
def test_awkward_images_flow_through(reasoner, restorer, shape):
    image = torch.rand(*shape)
    b, h, w = shape[:3]
    diagnoses, cot, js = run("Diagnose Degradation", reasoner=reasoner, image=image)
    assert len(diagnoses) == b
    if b > 1:
        assert cot.count("### image") == b and len(json.loads(js)) == b
    prior = run("Build Prior Prompt", diagnosis=diagnoses, overrides="")[0]
    (out,) = run("Restore", restorer=restorer, image=image, upscale=1.0, strength=1.0,
                 tile=64, overlap=8, force_upscale=False, prior=prior)
    assert out.shape == (b, h, w, 3)
    assert torch.isfinite(out).all()
    result = run("Severity Score", reasoner=reasoner, image=out)
    assert all(math.isfinite(v) for v in result[:len(TYPE_NAMES) + 1])
    if b > 1:
        assert result[-3].count("image ") >= b


def test_huge_image_through_diagnose_and_restore_glue(reasoner, restorer, monkeypatch):
    """6000x4000: the real network takes minutes on a 2-core CPU, so Restore runs with the
    network replaced by the identity; the node glue, layout conversion and tiler are real."""
    image = torch.rand(1, 4000, 6000, 3)
    diagnoses = run("Diagnose Degradation", reasoner=reasoner, image=image)[0]
    assert "6000x4000" in diagnoses[0].reasoning[0].text
    monkeypatch.setattr(restorer.model, "forward", lambda x, prior, **conditioning: x)
    calls = []
    monkeypatch.setattr(comfy, "progress_bar", lambda total: lambda d, t=None: calls.append(d))
    (out,) = run("Restore", restorer=restorer, image=image, upscale=1.0, strength=1.0,
                 tile=2048, overlap=32, force_upscale=False, diagnosis=diagnoses)
    assert out.shape == image.shape
    assert torch.allclose(out[0, ::500, ::500], image[0, ::500, ::500], atol=1e-5)
    assert calls and calls[-1] == 12  # 2 x 3 tiles, the network then the data step


# --- clear errors ---------------------------------------------------------------------------

def test_nan_image_names_the_input(reasoner, restorer):
    image = img(h=16, w=16)
    image[0, 2, 3, 1] = float("nan")
    image[0, 5, 5, 0] = float("inf")
    with pytest.raises(ValueError, match=r"Diagnose Degradation: image: contains 2 NaN"):
        run("Diagnose Degradation", reasoner=reasoner, image=image)
    with pytest.raises(ValueError, match=r"Restore: image: contains 2 NaN"):
        run("Restore", restorer=restorer, image=image, upscale=1.0, strength=1.0, tile=512,
            overlap=32, force_upscale=False)
    with pytest.raises(ValueError, match=r"clean_reference: contains 2 NaN"):
        run("Severity Score", reasoner=reasoner, image=img(h=16, w=16), clean_reference=image)


def test_bad_widget_values_name_the_input(restorer):
    kw = dict(restorer=restorer, image=img(h=16, w=16), force_upscale=False)
    with pytest.raises(ValueError, match=r"Restore: upscale: expected a number in \[1, 4\]"):
        run("Restore", **kw, upscale=8.0, strength=1.0, tile=512, overlap=32)
    with pytest.raises(ValueError, match=r"Restore: overlap: 40 must be less than half"):
        run("Restore", **kw, upscale=1.0, strength=1.0, tile=64, overlap=40)
    with pytest.raises(ValueError, match=r"diagnosis: 3 diagnoses for a batch of 1"):
        run("Restore", **kw, upscale=1.0, strength=1.0, tile=512, overlap=32,
            diagnosis=[diag()] * 3)
    with pytest.raises(TypeError, match=r"Restore: restorer: expected a RR_RESTORER"):
        run("Restore", **{**kw, "restorer": object()}, upscale=1.0, strength=1.0, tile=512,
            overlap=32)


def test_overrides_errors_and_malformed_diagnosis_json():
    d = [diag(noise={"sigma": 20.0})]
    with pytest.raises(ValueError, match=r"Build Prior Prompt: overrides part 1 'nosie: off'"):
        run("Build Prior Prompt", diagnosis=d, overrides="nosie: off")
    bad = {"findings": [{"type": "noise", "params": {"sigma": 400}}]}
    with pytest.raises(DiagnosisError, match=r"overrides\.findings\[0\]\.params\.sigma: "
                                             r"expected a number in \[0, 50\]"):
        run("Build Prior Prompt", diagnosis=d, overrides=json.dumps(bad))
    with pytest.raises(DiagnosisError, match=r"overrides: not valid JSON"):
        run("Build Prior Prompt", diagnosis=d, overrides='{"findings": [')
    with pytest.raises(DiagnosisError, match=r"overrides\.findings\[0\]\.type"):
        run("Build Prior Prompt", diagnosis=d, overrides='{"findings": [{"type": "fog"}]}')


def test_diagnosis_json_round_trips_as_overrides():
    d = diag(haze={"beta": 1.5}, noise={"sigma": 30.0})
    prior = run("Build Prior Prompt", diagnosis=[diag()], overrides=d.to_json())[0]
    assert prior.diagnoses[0].types == ["haze", "noise"]
    batch = json.dumps([d.to_dict(), diag().to_dict()])
    prior = run("Build Prior Prompt", diagnosis=[diag(), diag()], overrides=batch)[0]
    assert [x.types for x in prior.diagnoses] == [["haze", "noise"], []]


def test_corrupt_weights_name_the_file(models):
    bad = models / "analyzer" / "corrupt.safetensors"
    bad.write_bytes(b"\x00\x01 not a safetensors file at all")
    try:
        with pytest.raises(ValueError, match=r"Load Reasoner: model_name: .*corrupt"
                                             r"\.safetensors: not a valid analyzer"):
            run("Load Reasoner", model_name="corrupt.safetensors", device="cpu",
                dtype="float32", keep_loaded=True)
        bad_r = models / "restorer" / "corrupt.safetensors"
        bad_r.write_bytes(b"")
        with pytest.raises(ValueError, match=r"Load Restorer: model_name: .*corrupt"
                                             r"\.safetensors: not a valid restorer"):
            run("Load Restorer", model_name="corrupt.safetensors", device="cpu",
                dtype="float32", keep_loaded=True)
    finally:
        bad.unlink()
        (models / "restorer" / "corrupt.safetensors").unlink(missing_ok=True)


@pytest.mark.parametrize("name", ["../analyzer/tiny.safetensors", "/etc/passwd",
                                  "sub/../../x.safetensors", "..\\x.safetensors",
                                  "C:\\x.safetensors"])
def test_path_traversal_is_refused(models, name):
    with pytest.raises(ValueError, match=r"model_name: .* is not allowed"):
        run("Load Reasoner", model_name=name, device="cpu", dtype="float32",
            keep_loaded=True)


def test_symlink_escape_is_refused(models, tmp_path):
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes((models / "analyzer" / ANALYZER_NAME).read_bytes())
    link = models / "analyzer" / "link.safetensors"
    link.symlink_to(outside)
    try:
        assert "link.safetensors" in comfy.list_models("analyzer")
        with pytest.raises(ValueError, match=r"points outside the analyzer model folder"):
            comfy.resolve_model_path("analyzer", "link.safetensors")
    finally:
        link.unlink()


def test_model_dropdowns_and_missing_files(models):
    choices = NODE_CLASS_MAPPINGS["RRLoadReasoner"].INPUT_TYPES()["required"]["model_name"][0]
    assert choices == ["default (built-in)", ANALYZER_NAME]
    with pytest.raises(FileNotFoundError, match=r"model_name: 'nope\.safetensors' not found"):
        run("Load Restorer", model_name="nope.safetensors", device="cpu", dtype="float32",
            keep_loaded=True)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"Load Restorer: device: 'cuda' was chosen"):
            run("Load Restorer", model_name=RESTORER_NAME, device="cuda", dtype="float32",
                keep_loaded=True)


def test_default_weights_load_or_explain(models):
    from reason_restore.reasoner.engine import DEFAULT_ANALYZER
    if DEFAULT_ANALYZER.is_file():
        r = run("Load Reasoner", model_name="default (built-in)", device="cpu",
                dtype="float32", keep_loaded=False)[0]
        assert r.keep_loaded is False
        assert len(r.diagnose(torch.rand(1, 3, 64, 64))) == 1
    else:
        with pytest.raises(FileNotFoundError, match="built-in analyzer weights are missing"):
            run("Load Reasoner", model_name="default (built-in)", device="cpu",
                dtype="float32", keep_loaded=True)
    from reason_restore.restorer.engine import DEFAULT_RESTORER
    if DEFAULT_RESTORER.is_file():
        r = run("Load Restorer", model_name="default (built-in)", device="cpu",
                dtype="float32", keep_loaded=True)[0]
        (out,) = run("Restore", restorer=r, image=img(h=32, w=32), upscale=1.0, strength=1.0,
                     tile=512, overlap=32, force_upscale=False)
        assert out.shape == (1, 32, 32, 3)
    else:
        with pytest.raises(FileNotFoundError, match="built-in restorer weights are missing"):
            run("Load Restorer", model_name="default (built-in)", device="cpu",
                dtype="float32", keep_loaded=True)


def test_low_precision_and_offload(models):
    r = run("Load Reasoner", model_name=ANALYZER_NAME, device="cpu", dtype="bfloat16",
            keep_loaded=False)[0]
    assert r.dtype == torch.bfloat16
    assert len(run("Diagnose Degradation", reasoner=r, image=img(h=16, w=16))[0]) == 1


# --- inside ComfyUI (fake modules standing in for comfy.* and folder_paths) -----------------

@pytest.fixture
def fake_comfy(tmp_path, monkeypatch):
    state = {"updates": [], "interrupt": False, "emptied": 0}

    class Interrupted(Exception):
        pass

    class ProgressBar:
        def __init__(self, total):
            self.total = total

        def update_absolute(self, value, total=None):
            state["updates"].append((value, total or self.total))

    def soft_empty_cache():
        state["emptied"] += 1

    def throw_exception_if_processing_interrupted():
        if state["interrupt"]:
            raise Interrupted()

    pkg = types.ModuleType("comfy")
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    model_management = types.ModuleType("comfy.model_management")
    model_management.get_torch_device = lambda: torch.device("cpu")
    model_management.soft_empty_cache = soft_empty_cache
    model_management.throw_exception_if_processing_interrupted = (
        throw_exception_if_processing_interrupted)
    pkg.utils, pkg.model_management = utils, model_management

    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(tmp_path / "models")
    fp.folder_names_and_paths = {}

    def add_model_folder_path(name, path, is_default=False):
        fp.folder_names_and_paths.setdefault(name, ([], set()))
        if path not in fp.folder_names_and_paths[name][0]:
            fp.folder_names_and_paths[name][0].append(path)
    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = lambda name: list(fp.folder_names_and_paths[name][0])
    fp.get_filename_list = lambda name: []
    for name, mod in (("comfy", pkg), ("comfy.utils", utils),
                      ("comfy.model_management", model_management), ("folder_paths", fp)):
        monkeypatch.setitem(sys.modules, name, mod)
    state["Interrupted"] = Interrupted
    state["folder_paths"] = fp
    return state


def test_comfy_progress_interrupt_and_folders(fake_comfy, reasoner, restorer, models):
    assert comfy.in_comfyui()
    image = img(b=2, h=16, w=16)
    run("Diagnose Degradation", reasoner=reasoner, image=image)
    assert fake_comfy["updates"][-1] == (2, 2)
    fake_comfy["updates"].clear()
    run("Restore", restorer=restorer, image=image, upscale=1.0, strength=1.0, tile=512,
        overlap=32, force_upscale=False)
    assert fake_comfy["updates"][-1] == (4, 4)  # per image: the network, then the data step

    fake_comfy["interrupt"] = True
    with pytest.raises(fake_comfy["Interrupted"]):  # passes through, unwrapped
        run("Restore", restorer=restorer, image=image, upscale=1.0, strength=1.0, tile=512,
            overlap=32, force_upscale=False)
    fake_comfy["interrupt"] = False

    fp = fake_comfy["folder_paths"]
    folder = comfy.model_folder("restorer")
    assert folder.is_dir() and folder.parent.name == "reason_restore"
    assert str(folder) in fp.folder_names_and_paths["reason_restore_restorer"][0]
    assert ".safetensors" in fp.folder_names_and_paths["reason_restore_restorer"][1]
    (folder / "mine.safetensors").write_bytes((models / "restorer" / RESTORER_NAME)
                                              .read_bytes())
    assert comfy.list_models("restorer") == ["default (built-in)", "mine.safetensors"]
    r = run("Load Restorer", model_name="mine.safetensors", device="auto", dtype="float32",
            keep_loaded=False)[0]
    run("Restore", restorer=r, image=image, upscale=1.0, strength=1.0, tile=512,
        overlap=32, force_upscale=False)
    assert fake_comfy["emptied"] >= 1


def test_importing_nodes_does_not_need_comfyui():
    assert not comfy.in_comfyui()
    comfy.check_interrupt()
    comfy.soft_empty_cache()
    comfy.progress_bar(3)(1, 3)
    assert str(comfy.get_device("cpu")) == "cpu"


def test_loaders_notice_a_replaced_file(models):
    cls = NODE_CLASS_MAPPINGS["RRLoadReasoner"]
    path = models / "analyzer" / ANALYZER_NAME
    before = cls.IS_CHANGED(model_name=ANALYZER_NAME, device="cpu")
    assert str(path) in before
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    assert cls.IS_CHANGED(model_name=ANALYZER_NAME) != before
    assert cls.IS_CHANGED(model_name="../x") == "../x"  # never raises
    from reason_restore.restorer.engine import DEFAULT_RESTORER
    stamp = NODE_CLASS_MAPPINGS["RRLoadRestorer"].IS_CHANGED(model_name="default (built-in)")
    assert stamp.startswith(str(DEFAULT_RESTORER) if DEFAULT_RESTORER.is_file()
                            else "default (built-in)")
