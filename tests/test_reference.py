"""The diffusion controller, Load Diffusion Reference Model, Reference Synthesize with a tiny
random Stable Diffusion (diffusers folder and single file, CPU, seconds), the shipped config
skeletons, the two diffusion workflows, and two steps of the reference fine-tuning script."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from _tiny import RESTORER_NAME, make_models
from _tiny_sd import NAME, make_tiny_sd
from reason_restore import NODE_CLASS_MAPPINGS
from reason_restore.reasoner.diagnosis import Diagnosis, Finding
from reason_restore.reasoner.taxonomy import TAXONOMY, TYPE_NAMES, get_type
from reason_restore.restorer import controller as C
from reason_restore.restorer.prior import build_prompts, make_prior, params_for_severity

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models on a shared, busy CPU: one thread is ~100x faster than two fighting for
    # cores (OpenMP barriers); restored afterwards for the other test modules.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(key, **kwargs):
    obj = NODE_CLASS_MAPPINGS[key]()
    out = getattr(obj, obj.FUNCTION)(**kwargs)
    return out["result"] if isinstance(out, dict) else out


def diag(*types, severity=0.5, **kw):
    return Diagnosis.from_findings(
        [Finding.from_params(t, params_for_severity(t, severity)) for t in types], **kw)


# --- controller policy --------------------------------------------------------------------------

def test_settings_are_bounded_and_monotone_in_severity():
    grid = [i / 100 for i in range(101)]
    for fn, (lo, hi) in ((C.denoise_for, C.DENOISE_RANGE), (C.steps_for, C.STEPS_RANGE),
                         (C.cfg_for, C.CFG_RANGE)):
        values = [fn(s) for s in grid]
        assert values[0] == lo and values[-1] == hi
        assert all(a <= b for a, b in zip(values, values[1:])), fn.__name__
        assert all(lo <= v <= hi for v in values)
        assert fn(-3.0) == lo and fn(7.0) == hi  # out-of-range severities are clamped
    # Light damage -> low strength, heavy -> higher (strictly, for denoise and cfg).
    assert C.denoise_for(0.1) < C.denoise_for(0.5) < C.denoise_for(0.9)
    assert C.cfg_for(0.1) < C.cfg_for(0.9) and C.steps_for(0.1) < C.steps_for(0.9)


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_plans_grow_with_each_types_severity(type_name):
    plans = [C.control(diag(type_name, severity=s)) for s in (0.05, 0.3, 0.6, 0.95)]
    for a, b in zip(plans, plans[1:]):
        assert a.severity < b.severity
        assert a.denoise < b.denoise and a.cfg < b.cfg and a.steps <= b.steps
    # Adding a second degradation never lowers the settings (severities combine as a union).
    other = "noise" if type_name != "noise" else "blur"
    one, two = C.control(diag(type_name)), C.control(diag(type_name, other))
    assert two.denoise > one.denoise and two.steps >= one.steps and two.cfg > one.cfg


def test_prompts_mention_exactly_the_diagnosed_types():
    for r in range(len(TYPE_NAMES) + 1):
        for types in itertools.combinations(TYPE_NAMES, r):
            plan = C.control(diag(*types))
            for t in TAXONOMY:
                assert (t.clean_words in plan.positive) == (t.name in types), (types, t.name)
                assert (t.artefact_words in plan.negative) == (t.name in types), (types, t.name)
            assert set(plan.types) == set(types)
    clean = C.control(None)
    assert clean.positive == f"a photograph, {C.GENERIC_POSITIVE}"
    assert clean.negative == ", ".join(C.GENERIC_NEGATIVE)
    assert clean.denoise == C.DENOISE_RANGE[0]


def test_prompts_put_the_worst_first_and_carry_scene_and_instruction():
    d = Diagnosis.from_findings(
        [Finding.from_params("noise", params_for_severity("noise", 0.2)),
         Finding.from_params("blur", params_for_severity("blur", 0.9))],
        scene="a harbour at dusk", objects=["boats", "gulls"])
    plan = C.control(d, "warm tones")
    assert plan.types == ("blur", "noise")
    pos, neg = plan.positive, plan.negative
    assert pos.startswith("a harbour at dusk with boats, gulls, high quality photo")
    assert pos.index(get_type("blur").clean_words) < pos.index(get_type("noise").clean_words)
    assert neg.index(get_type("blur").artefact_words) < neg.index(
        get_type("noise").artefact_words)
    assert pos.endswith("warm tones")
    # Overrides go through the controller too.
    assert "blur" not in C.control(d, overrides="blur: off").types


def test_seed_policy():
    d1, d2 = diag("noise"), diag("jpeg")
    assert C.control(d1).seed == C.DEFAULT_SEED == 0
    assert C.control(d1, seed=1234).seed == 1234
    auto = C.control(d1, seed=C.AUTO_SEED).seed
    assert auto == C.control(diag("noise"), seed=-1).seed  # deterministic, not random
    assert 0 <= auto < 2 ** 32
    assert auto != C.control(d2, seed=-1).seed
    assert auto != C.control(d1, "another wish", seed=-1).seed
    with pytest.raises(ValueError, match="seed"):
        C.control(d1, seed=-2)
    with pytest.raises(TypeError, match="seed"):
        C.control(d1, seed=1.5)


def test_build_prompts_stays_a_thin_wrapper():
    d = diag("haze", "rain")
    assert build_prompts(d, "x") == C.control(d, "x")
    prior = make_prior([d, None], "x", seed=7)
    assert [p.seed for p in prior.prompts] == [7, 7]
    assert prior.prompts[1] == C.control(None, "x", seed=7)


def test_build_prior_prompt_node_outputs_sampler_settings():
    cls = NODE_CLASS_MAPPINGS["RRBuildPriorPrompt"]
    assert cls.RETURN_NAMES == ("prior", "positive", "negative", "denoise", "steps", "cfg",
                                "seed")
    assert cls.RETURN_TYPES[1:] == ("STRING", "STRING", "FLOAT", "INT", "FLOAT", "INT")
    light, heavy = diag("noise", severity=0.1), diag("noise", "blur", severity=0.8)
    out = run("RRBuildPriorPrompt", diagnosis=[light, heavy], overrides="", instruction="",
              seed=5)
    prior, pos, neg, denoise, steps, cfg, seed = out
    plan = C.control(heavy, seed=5)  # a batch reports its most degraded image
    assert (pos, neg, denoise, steps, cfg, seed) == (plan.positive, plan.negative,
                                                    plan.denoise, plan.steps, plan.cfg, 5)
    assert isinstance(steps, int) and isinstance(seed, int) and isinstance(cfg, float)
    assert [p.seed for p in prior.prompts] == [5, 5]
    auto = run("RRBuildPriorPrompt", diagnosis=[heavy], overrides="", seed=-1)[6]
    assert auto == C.control(heavy, seed=-1).seed
    with pytest.raises(ValueError, match="Build Prior Prompt: seed"):
        run("RRBuildPriorPrompt", diagnosis=[heavy], overrides="", seed=-5)


# --- shipped config skeletons ---------------------------------------------------------------------

SKELETONS = ROOT / "restorer" / "reference" / "configs"
# Published parameter counts of the real models: the skeletons must describe exactly them.
PARAMS = {"sd15": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
          "sdxl": {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480,
                   "text_encoder_2": 694_659_840}}


@pytest.mark.parametrize("family", sorted(PARAMS))
def test_shipped_skeletons_hold_no_weights_and_describe_the_real_models(family):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import AutoConfig, CLIPTextModel, CLIPTextModelWithProjection

    from reason_restore.restorer.reference.pipeline import read_model_index
    folder = SKELETONS / family
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files and all(p.suffix == ".json" for p in files), files
    assert sum(p.stat().st_size for p in files) < 100_000
    index = read_model_index(folder)
    assert index["_class_name"] in ("StableDiffusionPipeline", "StableDiffusionXLPipeline")
    counts = {}
    with init_empty_weights():
        counts["unet"] = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(folder / "unet"))
        counts["vae"] = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        counts["text_encoder"] = CLIPTextModel(AutoConfig.from_pretrained(
            folder / "text_encoder", local_files_only=True))
        if family == "sdxl":
            counts["text_encoder_2"] = CLIPTextModelWithProjection(AutoConfig.from_pretrained(
                folder / "text_encoder_2", local_files_only=True))
    got = {k: sum(p.numel() for p in m.parameters()) for k, m in counts.items()}
    assert got == PARAMS[family]


def test_skeleton_tokenizers_take_the_vocabulary_from_elsewhere(tmp_path):
    from _tiny_sd import write_tokenizer
    from reason_restore.restorer.reference.pipeline import (_missing_tokenizers,
                                                            read_model_index)
    vocab = write_tokenizer(tmp_path / "vocab")
    folder = SKELETONS / "sdxl"
    toks = _missing_tokenizers(folder, read_model_index(folder), [tmp_path / "none", vocab])
    assert set(toks) == {"tokenizer", "tokenizer_2"}
    assert toks["tokenizer"].model_max_length == 77 and toks["tokenizer_2"].pad_token == "!"
    assert toks["tokenizer"].pad_token == "<|endoftext|>"
    with pytest.raises(ValueError, match="vocabulary"):
        old = os.environ.pop("REASON_RESTORE_CLIP_TOKENIZER", None)
        try:
            _missing_tokenizers(folder, read_model_index(folder), [tmp_path / "none"])
        finally:
            if old is not None:
                os.environ["REASON_RESTORE_CLIP_TOKENIZER"] = old


def test_family_detection_reads_key_names(tmp_path):
    from safetensors.torch import save_file

    from reason_restore.restorer.reference.pipeline import detect_family
    t = torch.zeros(1)
    unet_in = "model.diffusion_model.input_blocks.0.0.weight"

    def ckpt(name, keys, unet_channels=4):
        path = tmp_path / f"{name}.safetensors"
        tensors = {k: t for k in keys}
        tensors[unet_in] = torch.zeros(1, unet_channels, 1, 1)
        save_file(tensors, str(path))
        return path
    sd1 = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    assert detect_family(ckpt("sd15", [sd1])) == "sd15"
    assert detect_family(ckpt("xl", [
        "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"])) == "sdxl"
    with pytest.raises(ValueError, match="2.x"):
        detect_family(ckpt("sd2", ["cond_stage_model.model.ln_final.weight"]))
    with pytest.raises(ValueError, match="inpainting"):
        detect_family(ckpt("inpaint", [sd1], unet_channels=9))
    with pytest.raises(ValueError, match="refiner"):
        detect_family(ckpt("refiner", [
            "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias"]))
    save_file({"some.other.model": t}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a Stable Diffusion checkpoint"):
        detect_family(tmp_path / "other.safetensors")


# --- tiny Stable Diffusion end to end -------------------------------------------------------------

@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    info = make_tiny_sd(root)
    make_models(root / "reason_restore")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REASON_RESTORE_MODELS", str(root / "reason_restore"))
        mp.setenv("REASON_RESTORE_CHECKPOINTS", str(root / "checkpoints"))
        mp.setenv("REASON_RESTORE_DIFFUSERS", str(root / "diffusers"))
        mp.setenv("REASON_RESTORE_CLIP_TOKENIZER", str(info["tokenizer"]))
        info["root"] = root
        yield info


LOAD = dict(device="cpu", dtype="float32", offload="auto")


@pytest.fixture(scope="module")
def from_folder(sd):
    return run("RRLoadDiffusionReference", model_name=f"diffusers/{NAME}", config="auto",
               **LOAD)[0]


@pytest.fixture(scope="module")
def from_file(sd):
    return run("RRLoadDiffusionReference", model_name=f"checkpoints/{NAME}.safetensors",
               config=f"diffusers/{NAME}-config", **LOAD)[0]


def comfy_image(h=28, w=36, seed=0):
    return torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(seed))


def fast_prior(seed=0, *types):
    """A prior whose plan runs 2 denoising steps (denoise 0.5 x 4 steps), to stay fast."""
    prior = make_prior([diag(*(types or ("noise",)))], seed=seed)
    prior.prompts = [C.PromptPlan(p.positive, p.negative, 0.5, 4, p.cfg, p.seed, p.severity,
                                  p.types) for p in prior.prompts]
    return prior


def test_dropdowns_list_the_users_models(sd):
    spec = NODE_CLASS_MAPPINGS["RRLoadDiffusionReference"].INPUT_TYPES()["required"]
    models, configs = spec["model_name"][0], spec["config"][0]
    assert models == [f"checkpoints/{NAME}.safetensors", f"diffusers/{NAME}"]
    assert configs == ["auto", "sd15 (built-in)", "sdxl (built-in)", f"diffusers/{NAME}",
                       f"diffusers/{NAME}-config"]


def test_both_sources_load_the_same_weights(sd, from_folder, from_file):
    assert from_folder.source == "diffusers folder" and from_file.source == "single file"
    for model in (from_folder, from_file):
        assert model.pipe.__class__.__name__ == "StableDiffusionImg2ImgPipeline"
        assert model.pipe.vae.use_tiling and model.vae_scale_factor == 8
        assert model.offload_mode == "none" and model.memory_bytes() > 0
        # Single-file loading is non-strict: compare every tensor with the original.
        for comp in ("unet", "vae", "text_encoder"):
            want = getattr(sd["pipe"], comp).state_dict()
            got = getattr(model.pipe, comp).state_dict()
            want = {k: v for k, v in want.items() if not k.endswith("position_ids")}
            assert set(want) <= set(got), (comp, sorted(set(want) - set(got))[:3])
            bad = [k for k in want if not torch.equal(want[k], got[k])]
            assert not bad, (comp, bad[:3])


def test_reference_synthesize_end_to_end(sd, from_folder, from_file):
    image = comfy_image()
    prior = fast_prior()
    kw = dict(prior=prior, image=image, max_side=1024)
    (a,) = run("RRReferenceSynthesize", diffusion=from_folder, **kw)
    assert a.shape == image.shape and a.dtype == torch.float32  # 36x28 -> 32x32 -> 36x28
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert not torch.allclose(a, image, atol=1e-3)
    (b,) = run("RRReferenceSynthesize", diffusion=from_file, **kw)
    assert torch.equal(a, b)  # same weights, same seed: the same picture
    # Deterministic for a seed, different for another.
    assert torch.equal(run("RRReferenceSynthesize", diffusion=from_folder, **kw)[0], a)
    (c,) = run("RRReferenceSynthesize", diffusion=from_folder, prior=fast_prior(seed=1),
               image=image)
    assert not torch.equal(a, c)
    # It wires into Restore (the tiny restorer has no reference blocks: ignored, still runs).
    (restorer,) = run("RRLoadRestorer", model_name=RESTORER_NAME, device="cpu",
                      dtype="float32", keep_loaded=True)
    (out,) = run("RRRestore", restorer=restorer, image=image, upscale=1.0, strength=1.0,
                 tile=512, overlap=32, force_upscale=False, prior=prior, reference=a)
    assert out.shape == image.shape
    # Optionally restore first; batches get one run per image.
    (d,) = run("RRReferenceSynthesize", diffusion=from_folder, restorer=restorer, prior=prior,
               image=torch.cat([image, comfy_image(seed=3)]))
    assert d.shape == (2, 28, 36, 3)


def test_progress_interrupt_and_memory(sd, from_folder, monkeypatch):
    from reason_restore.nodes import comfy
    from reason_restore.restorer.reference.synthesize import synthesize_reference
    images = comfy_image().permute(0, 3, 1, 2)
    plan = fast_prior().prompts[0]
    calls = []
    out = synthesize_reference(from_folder, images, [plan], progress=lambda d, n:
                               calls.append((d, n)))
    assert calls[-1] == (2, 2) and [d for d, _ in calls] == sorted(d for d, _ in calls)

    class Cancelled(Exception):
        pass

    steps = []

    def cancel():
        steps.append(1)
        if len(steps) >= 2:  # checked before the run and after each step: stop after step 1
            raise Cancelled
    with pytest.raises(Cancelled):
        synthesize_reference(from_folder, images, [plan], check_interrupt=cancel)
    assert len(steps) == 2
    # The pipeline stays usable after an interrupt, and gives the same result as before.
    assert torch.equal(synthesize_reference(from_folder, images, [plan]), out)
    # The node routes ComfyUI's Cancel through the same callback.
    monkeypatch.setattr(comfy, "check_interrupt", cancel)
    steps.clear()
    with pytest.raises(Cancelled):
        run("RRReferenceSynthesize", diffusion=from_folder, prior=fast_prior(),
            image=comfy_image())
    monkeypatch.undo()

    # Large images: tiled VAE (tiles above the VAE's sample size, 32 px here); max_side caps
    # the working size and the result is resized back.
    tiles = []
    vae = from_folder.pipe.vae
    orig = vae._tiled_encode
    monkeypatch.setattr(vae, "_tiled_encode", lambda *a, **k: tiles.append(1) or orig(*a, **k))
    big = synthesize_reference(from_folder, torch.rand(1, 3, 80, 72), [plan], max_side=48)
    assert big.shape == (1, 3, 80, 72) and tiles  # worked at 48x40: above the 32-px tile
    monkeypatch.undo()

    # Memory: offload keeps the weights, unload drops them.
    from reason_restore.restorer.reference.pipeline import load_pipeline
    model = load_pipeline(sd["folder"], device="cpu", offload="after_run")
    assert model.offload_mode == "after_run"
    synthesize_reference(model, images, [plan])
    model.offload()
    model.unload()
    assert not model.loaded
    with pytest.raises(ValueError, match="unloaded"):
        synthesize_reference(model, images, [plan])


def test_working_size_and_steps():
    from reason_restore.restorer.reference.synthesize import effective_steps, working_size
    assert working_size(44, 60, 8) == (48, 64)  # nearest multiple of 8
    assert working_size(3, 5, 8) == (8, 8)
    assert working_size(2000, 1000, 8, max_side=1024) == (1024, 512)
    assert effective_steps(20, 0.15) == (20, 3)
    assert effective_steps(4, 0.1) == (10, 1)  # always at least one real step
    assert effective_steps(20, 0.0) == (20, 0)


def test_bad_inputs_name_what_is_wrong(sd, from_folder, tmp_path):
    from reason_restore.nodes.reference import resolve
    load = NODE_CLASS_MAPPINGS["RRLoadDiffusionReference"]().load
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"x")
    link = sd["root"] / "checkpoints" / "link.safetensors"
    link.symlink_to(outside)  # removed below, so the dropdown stays as the other tests expect
    for name, match in [(f"checkpoints/../checkpoints/{NAME}.safetensors", "not allowed"),
                        (str(sd["checkpoint"]), "not allowed"),
                        ("/etc/passwd", "not allowed"),
                        ("checkpoints/link.safetensors", "points outside"),
                        ("elsewhere/x.safetensors", "not allowed"),
                        ("diffusers/..", "not allowed")]:
        with pytest.raises(ValueError, match=match):
            load(model_name=name, config="auto", **LOAD)
    link.unlink()
    with pytest.raises(FileNotFoundError):
        resolve("checkpoints/missing.safetensors")
    with pytest.raises(ValueError, match="config"):
        load(model_name=f"checkpoints/{NAME}.safetensors", config="diffusers/../x", **LOAD)
    with pytest.raises(ValueError, match="offload"):
        load(model_name=f"diffusers/{NAME}", config="auto", device="cpu", dtype="float32",
             offload="model_cpu_offload")
    kw = dict(prior=fast_prior(), image=comfy_image())
    with pytest.raises(ValueError, match="reference: connect either"):
        run("RRReferenceSynthesize", diffusion=from_folder, reference=comfy_image(), **kw)
    with pytest.raises(TypeError, match="diffusion: expected a RR_DIFFUSION"):
        run("RRReferenceSynthesize", diffusion="nope", **kw)
    # Without a diffusion model: the old pass-through behaviour.
    assert run("RRReferenceSynthesize", **kw)[0] is kw["image"]


# --- workflows ----------------------------------------------------------------------------------

def _wf(name):
    wf = json.loads((ROOT / "workflows" / name).read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    links = {link[0]: link for link in wf["links"]}

    def source(node, input_name):
        inp = next(i for i in node["inputs"] if i["name"] == input_name)
        link = links[inp["link"]]
        src = nodes[link[1]]
        return src["type"], src["outputs"][link[2]]["name"], src
    return wf, nodes, source


def test_native_workflow_feeds_ksampler_from_the_controller():
    wf, nodes, source = _wf("native_ksampler.json")
    ks = next(n for n in wf["nodes"] if n["type"] == "KSampler")
    for name in ("seed", "steps", "cfg", "denoise"):
        assert source(ks, name)[:2] == ("RRBuildPriorPrompt", name)
    for slot in ("positive", "negative"):
        kind, _, enc = source(ks, slot)
        assert kind == "CLIPTextEncode"
        assert source(enc, "text")[:2] == ("RRBuildPriorPrompt", slot)
        assert source(enc, "clip")[0] == "CheckpointLoaderSimple"
    assert source(ks, "latent_image")[0] == "VAEEncode"
    assert source(ks, "model")[0] == "CheckpointLoaderSimple"


def test_diffusion_reference_workflow_feeds_restore():
    wf, nodes, source = _wf("diffusion_reference.json")
    restore = next(n for n in wf["nodes"] if n["type"] == "RRRestore")
    kind, _, synth = source(restore, "reference")
    assert kind == "RRReferenceSynthesize"
    assert source(synth, "diffusion")[0] == "RRLoadDiffusionReference"
    assert source(synth, "prior")[0] == "RRBuildPriorPrompt"


# --- fine-tuning script ------------------------------------------------------------------------

def test_train_reference_runs_two_steps(tmp_path):
    from reason_restore.restorer.network import load_restorer
    from reason_restore.tools import train_reference as TR
    _, r_path = make_models(tmp_path / "models")
    patches = np.random.default_rng(0).integers(0, 256, (6, 48, 48, 3), dtype=np.uint8)
    np.save(tmp_path / "patches.npy", patches)
    record = TR.main(["--steps", "2", "--batch", "2", "--crop", "32", "--eval-images", "2",
                      "--init", str(r_path), "--patches", str(tmp_path / "patches.npy"),
                      "--out", str(tmp_path / "out"), "--threads", "1",
                      "--predicted", "1"])  # every batch on the analyzer's diagnosis
    assert record["steps"] == 2 and record["predicted"] == 1.0
    model = load_restorer(tmp_path / "out" / "restorer_reference.safetensors")
    assert model.config.use_reference and model.ref_encoder is not None
    # Step 0 is the shipped restorer exactly (zero gates): references change nothing yet.
    before = record["eval_before"]
    assert before["no_reference_psnr"] == before["good_reference_psnr"] == before[
        "poor_reference_psnr"]
    # The helpers produce what the docs say.
    ramp = torch.linspace(0, 1, 32)
    clean = torch.stack([ramp[None, :].expand(32, 32), ramp[:, None].expand(32, 32),
                         torch.full((32, 32), 0.5)])[None].repeat(2, 1, 1, 1)
    good = TR.good_reference(clean, np.random.default_rng(0))
    assert good.shape == clean.shape and 0 < float((good - clean).abs().mean()) < 0.2
    poor = TR.poor_reference(patches, np.random.default_rng(0), clean)
    assert poor.shape == clean.shape


def test_reference_trust_tells_the_same_scene_from_another():
    """The gate that keeps an unrelated reference from hurting: same scene (blurred,
    colour-shifted, shifted by pixels) -> trusted; another picture -> 0."""
    import numpy as np
    from reason_restore.restorer.engine import reference_trust
    from reason_restore.tools.train_reference import good_reference
    rng = np.random.default_rng(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 128), indexing="ij")
    scene = torch.stack([xx, yy, (xx * 6).sin() * 0.5 + 0.5])[None].clamp(0, 1)
    other = torch.stack([1 - yy, (yy * 9).cos() * 0.5 + 0.5, xx.flip(-1)])[None]
    assert reference_trust(scene, scene) == 1.0
    assert reference_trust(scene, good_reference(scene, rng)) == 1.0
    assert reference_trust(scene, other) == 0.0
    assert reference_trust(scene, torch.full_like(scene, 0.5)) == 0.0  # flat: nothing to use


def test_restore_ignores_an_untrusted_reference_and_reports_trust():
    """An unrelated reference leaves the output exactly as without one; a matching one is
    used (the output changes once the reference blocks are non-neutral)."""
    from reason_restore.restorer.engine import Restorer
    from reason_restore.restorer.network import PriorRestorer, RestorerConfig
    from reason_restore.restorer.prior import prior_dim
    torch.manual_seed(0)
    model = PriorRestorer(RestorerConfig(prior_dim=prior_dim(), width=8, use_reference=True))
    for f in model.ref_fusions:
        torch.nn.init.constant_(f.gate, 0.5)
    restorer = Restorer(model.eval())
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 64), indexing="ij")
    img = torch.stack([xx, yy, (xx * 6).sin() * 0.5 + 0.5])[None].clamp(0, 1)
    other = torch.stack([1 - yy, (yy * 9).cos() * 0.5 + 0.5, xx.flip(-1)])[None]
    plain = restorer.restore(img)
    ignored = restorer.restore(img, reference=other)
    assert restorer.last_reference_trust == [0.0]
    assert torch.equal(plain, ignored)
    used = restorer.restore(img, reference=img)
    assert restorer.last_reference_trust[0] > 0.5
    assert not torch.allclose(plain, used)


def test_nothing_diagnosed_means_nothing_changed():
    """Reason first: an empty diagnosis returns the image untouched (the network is not the
    identity on a clean photo); blind restoration (no diagnosis) still runs the network."""
    from reason_restore.reasoner.diagnosis import Diagnosis
    from reason_restore.restorer.engine import Restorer
    from reason_restore.restorer.network import PriorRestorer, RestorerConfig
    from reason_restore.restorer.prior import prior_dim
    torch.manual_seed(0)
    model = PriorRestorer(RestorerConfig(prior_dim=prior_dim(), width=8))
    for p in model.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    img = torch.rand(2, 3, 24, 24)
    calls = []
    out = Restorer(model.eval()).restore(img, [Diagnosis.from_findings([])] * 2,
                                         progress=lambda d, t: calls.append((d, t)))
    assert torch.equal(out, img)
    assert calls[-1] == (4, 4)  # complete: two images, each the network and the data step
    assert not torch.allclose(Restorer(model).restore(img), img)
