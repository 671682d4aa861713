"""The shipped workflows must load and validate in ComfyUI: every node type exists, widget
values fit their inputs, and every link joins an output to an input of the same type.

UI format (what the web UI saves, ``workflows/*.json``) and API format (``workflows/api/``,
what the HTTP runner posts) are both checked, against our NODE_CLASS_MAPPINGS plus the few
core nodes the workflows use, declared below as ComfyUI 0.3.x defines them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from reason_restore import NODE_CLASS_MAPPINGS
from reason_restore.nodes.comfy import DEFAULT_CHOICE

ROOT = Path(__file__).resolve().parents[1]
UI_WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
API_WORKFLOWS = sorted((ROOT / "workflows" / "api").glob("*.json"))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
SEED_CONTROLS = {"fixed", "increment", "decrement", "randomize"}
SAMPLER_NAMES = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis",
    "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp",
    "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc",
    "uni_pc_bh2"]
SCHEDULER_NAMES = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta",
                   "normal", "linear_quadratic", "kl_optimal"]

# Core nodes used by the workflows, as ComfyUI's nodes.py declares them. "IMAGE_FILE" stands for
# LoadImage's combo of files in input/ (which differs per install: any image file name).
CORE_NODES = {
    "LoadImage": {
        "inputs": {"required": {"image": ("IMAGE_FILE", {"image_upload": True})}},
        "outputs": (("IMAGE", "IMAGE"), ("MASK", "MASK")),
    },
    "SaveImage": {
        "inputs": {"required": {"images": ("IMAGE", {}),
                                "filename_prefix": ("STRING", {"default": "ComfyUI"})}},
        "outputs": (),
        "output_node": True,
    },
    "PreviewImage": {
        "inputs": {"required": {"images": ("IMAGE", {})}},
        "outputs": (),
        "output_node": True,
    },
    # The native sampler path (workflows/native_ksampler.json), from ComfyUI's nodes.py and
    # comfy/samplers.py. "MODEL_FILE" stands for a combo of model files that differs per
    # install (like IMAGE_FILE): any checkpoint file name.
    "CheckpointLoaderSimple": {
        "inputs": {"required": {"ckpt_name": ("MODEL_FILE", {})}},
        "outputs": (("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")),
    },
    "CLIPTextEncode": {
        "inputs": {"required": {"text": ("STRING", {"multiline": True,
                                                    "dynamicPrompts": True}),
                                "clip": ("CLIP", {})}},
        "outputs": (("CONDITIONING", "CONDITIONING"),),
    },
    "VAEEncode": {
        "inputs": {"required": {"pixels": ("IMAGE", {}), "vae": ("VAE", {})}},
        "outputs": (("LATENT", "LATENT"),),
    },
    "VAEDecode": {
        "inputs": {"required": {"samples": ("LATENT", {}), "vae": ("VAE", {})}},
        "outputs": (("IMAGE", "IMAGE"),),
    },
    "KSampler": {
        "inputs": {"required": {
            "model": ("MODEL", {}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff,
                             "control_after_generate": True}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1,
                              "round": 0.01}),
            "sampler_name": (SAMPLER_NAMES, {}),
            "scheduler": (SCHEDULER_NAMES, {}),
            "positive": ("CONDITIONING", {}),
            "negative": ("CONDITIONING", {}),
            "latent_image": ("LATENT", {}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
        }},
        "outputs": (("LATENT", "LATENT"),),
    },
}
# Inputs of the pack's nodes whose choices are the user's own model files (the shipped
# workflows name a typical one; the list differs per install).
MODEL_FILE_INPUTS = {("RRLoadDiffusionReference", "model_name")}
MODEL_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")


class WorkflowError(AssertionError):
    pass


def node_spec(node_type: str) -> dict:
    if node_type in NODE_CLASS_MAPPINGS:
        cls = NODE_CLASS_MAPPINGS[node_type]
        inputs = cls.INPUT_TYPES()
        for section in inputs.values():
            for name, entry in section.items():
                if (node_type, name) in MODEL_FILE_INPUTS:
                    section[name] = ("MODEL_FILE",) + tuple(entry[1:])
        return {"inputs": inputs,
                "outputs": tuple(zip(cls.RETURN_NAMES, cls.RETURN_TYPES)),
                "output_node": getattr(cls, "OUTPUT_NODE", False)}
    if node_type in CORE_NODES:
        return CORE_NODES[node_type]
    raise WorkflowError(f"unknown node type {node_type!r}")


def _inputs(spec: dict):
    """(name, type, options, required) in declaration order."""
    for section in ("required", "optional"):
        for name, entry in spec["inputs"].get(section, {}).items():
            opts = entry[1] if len(entry) > 1 else {}
            yield name, entry[0], opts, section == "required"


def _is_widget(kind, opts) -> bool:
    if opts.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES or kind in ("IMAGE_FILE", "MODEL_FILE")


def _has_seed_control(name, kind, opts) -> bool:
    return kind == "INT" and (opts.get("control_after_generate")
                              or name in ("seed", "noise_seed"))


def check_value(where: str, name: str, kind, opts: dict, value) -> None:
    """One widget value against its declared input."""
    def fail(why):
        raise WorkflowError(f"{where}: widget {name!r} = {value!r}: {why}")
    if isinstance(kind, list):
        if value not in kind and not (name == "model_name" and value == DEFAULT_CHOICE):
            fail(f"not one of {kind}")
    elif kind == "IMAGE_FILE":
        if not isinstance(value, str) or not value.lower().endswith(IMAGE_SUFFIXES):
            fail("expected an image file name")
    elif kind == "MODEL_FILE":
        if not isinstance(value, str) or not (value.lower().endswith(MODEL_FILE_SUFFIXES)
                                              or value.startswith("diffusers/")):
            fail("expected a model file name")
    elif kind == "BOOLEAN":
        if not isinstance(value, bool):
            fail("expected true/false")
    elif kind == "STRING":
        if not isinstance(value, str):
            fail("expected text")
    elif kind in ("INT", "FLOAT"):
        ok = isinstance(value, int) if kind == "INT" else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok:
            fail(f"expected {kind}")
        if value < opts.get("min", float("-inf")) or value > opts.get("max", float("inf")):
            fail(f"outside [{opts.get('min')}, {opts.get('max')}]")
    else:
        fail(f"{kind} is not a widget type")


# --- UI format ------------------------------------------------------------------------------

def validate_ui(wf: dict) -> None:
    for key in ("last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra",
                "version"):
        if key not in wf:
            raise WorkflowError(f"missing top-level key {key!r}")
    nodes = {}
    for n in wf["nodes"]:
        if n["id"] in nodes:
            raise WorkflowError(f"node id {n['id']} used twice")
        nodes[n["id"]] = n
    if max(nodes) > wf["last_node_id"]:
        raise WorkflowError("last_node_id is smaller than a node id")
    links = {}
    for link in wf["links"]:
        if len(link) != 6:
            raise WorkflowError(f"link {link!r}: expected [id, from, slot, to, slot, type]")
        if link[0] in links:
            raise WorkflowError(f"link id {link[0]} used twice")
        links[link[0]] = link
    if links and max(links) > wf["last_link_id"]:
        raise WorkflowError("last_link_id is smaller than a link id")

    has_output = False
    for n in nodes.values():
        where = f"node {n['id']} ({n['type']})"
        spec = node_spec(n["type"])
        has_output |= bool(spec.get("output_node"))
        for key in ("pos", "size", "flags", "order", "mode", "properties"):
            if key not in n:
                raise WorkflowError(f"{where}: missing {key!r}")
        if n["properties"].get("Node name for S&R") != n["type"]:
            raise WorkflowError(f"{where}: properties['Node name for S&R'] should be the type")
        declared = list(_inputs(spec))
        sockets = {name: kind for name, kind, opts, _ in declared
                   if not _is_widget(kind, opts)}
        widgets = {name: kind for name, kind, opts, _ in declared if _is_widget(kind, opts)}
        seen = set()
        for slot, inp in enumerate(n.get("inputs", [])):
            name = inp["name"]
            if name in seen:
                raise WorkflowError(f"{where}: input {name!r} listed twice")
            seen.add(name)
            kind = sockets.get(name, widgets.get(name) if "widget" in inp else None)
            if kind is None:
                raise WorkflowError(f"{where}: no input named {name!r}")
            if inp["type"] != (kind if isinstance(kind, str) else "COMBO"):
                raise WorkflowError(f"{where}: input {name!r} has type {inp['type']!r}, "
                                    f"declared {kind!r}")
            if inp.get("link") is not None:
                link = links.get(inp["link"])
                if link is None:
                    raise WorkflowError(f"{where}: input {name!r} refers to missing link "
                                        f"{inp['link']}")
                if link[3] != n["id"] or link[4] != slot:
                    raise WorkflowError(f"{where}: link {link[0]} should end at input slot "
                                        f"{slot} of node {n['id']}, the table says node "
                                        f"{link[3]} slot {link[4]}")
        for name, kind, opts, required in declared:
            if required and not _is_widget(kind, opts):
                inp = next((i for i in n.get("inputs", []) if i["name"] == name), None)
                if inp is None or inp.get("link") is None:
                    raise WorkflowError(f"{where}: required input {name!r} is not connected")

        outs = n.get("outputs", [])
        if [(o["name"], o["type"]) for o in outs] != [tuple(o) for o in spec["outputs"]]:
            raise WorkflowError(f"{where}: outputs {[(o['name'], o['type']) for o in outs]} "
                                f"do not match the declared {list(spec['outputs'])}")
        for slot, o in enumerate(outs):
            if o.get("slot_index", slot) != slot:
                raise WorkflowError(f"{where}: output {o['name']!r} slot_index "
                                    f"{o.get('slot_index')} != {slot}")
            for lid in o.get("links") or []:
                link = links.get(lid)
                if link is None or link[1] != n["id"] or link[2] != slot:
                    raise WorkflowError(f"{where}: output {o['name']!r} lists link {lid}, "
                                        f"which does not start here")

        expected = []
        for name, kind, opts, _ in declared:
            if _is_widget(kind, opts):
                expected.append((name, kind, opts))
                if _has_seed_control(name, kind, opts):
                    expected.append((name + " control", "SEED_CONTROL", {}))
                if kind == "IMAGE_FILE":
                    expected.append((name + " upload", "UPLOAD", {}))
        values = list(n.get("widgets_values", []))
        if n["type"] == "LoadImage" and len(values) == 1:
            expected = expected[:1]  # the upload button's value is optional
        if len(values) != len(expected):
            raise WorkflowError(f"{where}: {len(values)} widget values for "
                                f"{[e[0] for e in expected]}")
        for (name, kind, opts), value in zip(expected, values):
            if kind == "SEED_CONTROL":
                if value not in SEED_CONTROLS:
                    raise WorkflowError(f"{where}: {name} = {value!r}, expected one of "
                                        f"{sorted(SEED_CONTROLS)}")
            elif kind == "UPLOAD":
                if value != "image":
                    raise WorkflowError(f"{where}: {name} = {value!r}, expected 'image'")
            else:
                check_value(where, name, kind, opts, value)

    for lid, (_, src, src_slot, dst, dst_slot, ltype) in links.items():
        if src not in nodes or dst not in nodes:
            raise WorkflowError(f"link {lid}: node {src if src not in nodes else dst} does "
                                f"not exist")
        outs, ins = nodes[src].get("outputs", []), nodes[dst].get("inputs", [])
        if src_slot >= len(outs) or dst_slot >= len(ins):
            raise WorkflowError(f"link {lid}: slot out of range")
        out, inp = outs[src_slot], ins[dst_slot]
        if lid not in (out.get("links") or []):
            raise WorkflowError(f"link {lid}: missing from node {src} output "
                                f"{out['name']!r} links")
        if inp.get("link") != lid:
            raise WorkflowError(f"link {lid}: node {dst} input {inp['name']!r} has link "
                                f"{inp.get('link')}")
        if not out["type"] == inp["type"] == ltype:
            raise WorkflowError(f"link {lid}: {nodes[src]['type']}.{out['name']} "
                                f"({out['type']}) -> {nodes[dst]['type']}.{inp['name']} "
                                f"({inp['type']}), link type {ltype}: types differ")

    order = {n["id"]: n["order"] for n in nodes.values()}
    if sorted(order.values()) != list(range(len(nodes))):
        raise WorkflowError("node 'order' values should be 0..N-1")
    for lid, (_, src, _, dst, _, _) in links.items():
        if order[src] >= order[dst]:
            raise WorkflowError(f"link {lid}: node {src} runs after node {dst} (a cycle or "
                                f"wrong order)")
    if not has_output:
        raise WorkflowError("no output node: ComfyUI would run nothing")


def ui_to_api(wf: dict) -> dict:
    """What 'Export (API)' produces from a UI workflow (for the nodes used here)."""
    links = {link[0]: link for link in wf["links"]}
    api = {}
    for n in sorted(wf["nodes"], key=lambda n: n["id"]):
        spec = node_spec(n["type"])
        inputs = {}
        values = iter(n.get("widgets_values", []))
        for name, kind, opts, _ in _inputs(spec):
            if _is_widget(kind, opts):
                inputs[name] = next(values)
                if _has_seed_control(name, kind, opts) or kind == "IMAGE_FILE":
                    next(values, None)
        for inp in n.get("inputs", []):
            if inp.get("link") is not None:
                link = links[inp["link"]]
                inputs[inp["name"]] = [str(link[1]), link[2]]
        api[str(n["id"])] = {"class_type": n["type"], "inputs": inputs}
    return api


# --- API format -----------------------------------------------------------------------------

def validate_api(wf: dict) -> None:
    if "nodes" in wf:
        raise WorkflowError("API format expected, got a UI workflow")
    has_output = False
    for nid, n in wf.items():
        where = f"node {nid} ({n.get('class_type')})"
        spec = node_spec(n["class_type"])
        has_output |= bool(spec.get("output_node"))
        declared = {name: (kind, opts, req) for name, kind, opts, req in _inputs(spec)}
        for name, value in n["inputs"].items():
            if name not in declared:
                raise WorkflowError(f"{where}: no input named {name!r}")
            kind, opts, _ = declared[name]
            if isinstance(value, list):
                src, slot = value
                if src not in wf:
                    raise WorkflowError(f"{where}: input {name!r} from missing node {src}")
                outs = node_spec(wf[src]["class_type"])["outputs"]
                if slot >= len(outs) or outs[slot][1] != kind:
                    got = outs[slot][1] if slot < len(outs) else "nothing"
                    raise WorkflowError(f"{where}: input {name!r} ({kind}) fed {got}")
            elif _is_widget(kind, opts):
                check_value(where, name, kind, opts, value)
            else:
                raise WorkflowError(f"{where}: socket input {name!r} needs a link")
        for name, (kind, opts, required) in declared.items():
            if required and name not in n["inputs"]:
                raise WorkflowError(f"{where}: required input {name!r} missing")
    if not has_output:
        raise WorkflowError("no output node")


# --- tests ----------------------------------------------------------------------------------

def load(path):
    return json.loads(path.read_text())


def test_the_expected_workflows_ship():
    names = {p.name for p in UI_WORKFLOWS}
    assert {"basic_restore.json", "degrade_diagnose_restore.json"} <= names
    assert (ROOT / "workflows" / "api" / "basic_restore.json") in API_WORKFLOWS


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=lambda p: p.name)
def test_ui_workflow_is_valid(path):
    wf = load(path)
    validate_ui(wf)
    types = {n["type"] for n in wf["nodes"]}
    # Every workflow restores (with the pack's restorer, or natively with KSampler) and scores.
    assert ("RRRestore" in types or "KSampler" in types) and "RRSeverityScore" in types
    loads = [n for n in wf["nodes"] if n["type"] == "LoadImage"]
    assert loads and all(n["widgets_values"][0] == "example.png" for n in loads)
    for n in wf["nodes"]:
        if n["type"] in ("RRLoadReasoner", "RRLoadRestorer"):
            assert n["widgets_values"][0] == DEFAULT_CHOICE  # works on every install


@pytest.mark.parametrize("path", API_WORKFLOWS, ids=lambda p: p.name)
def test_api_workflow_is_valid_and_matches_its_ui_twin(path):
    wf = load(path)
    validate_api(wf)
    twin = ROOT / "workflows" / path.name
    if twin.exists():
        assert ui_to_api(load(twin)) == wf, f"{path} is out of date with {twin}"


def test_degrade_workflow_scores_against_the_clean_image():
    wf = load(ROOT / "workflows" / "degrade_diagnose_restore.json")
    nodes = {n["id"]: n for n in wf["nodes"]}
    score = next(n for n in wf["nodes"] if n["type"] == "RRSeverityScore")
    ref = next(i for i in score["inputs"] if i["name"] == "clean_reference")
    link = next(link for link in wf["links"] if link[0] == ref["link"])
    assert nodes[link[1]]["type"] == "LoadImage"


def _mutations():
    """(description, mutate(wf)) pairs that each break basic_restore in one way."""
    def node(wf, t):
        return next(n for n in wf["nodes"] if n["type"] == t)

    def retype_link(wf):
        wf["links"][0][5] = "MASK"

    def unknown_type(wf):
        node(wf, "RRRestore")["type"] = "RRRestoreTypo"

    def out_of_range(wf):
        node(wf, "RRRestore")["widgets_values"][0] = 9.0  # upscale max 4

    def bad_combo(wf):
        node(wf, "RRLoadReasoner")["widgets_values"][1] = "tpu"

    def missing_widget(wf):
        node(wf, "RRLoadRestorer")["widgets_values"].pop()

    def wrong_widget_type(wf):
        node(wf, "RRRestore")["widgets_values"][2] = "512"

    def dangling_link(wf):
        wf["links"].pop()

    def wrong_socket(wf):
        # Feed the restorer slot of Restore from Load Reasoner.
        restore, reasoner = node(wf, "RRRestore"), node(wf, "RRLoadReasoner")
        inp = next(i for i in restore["inputs"] if i["name"] == "restorer")
        link = next(l for l in wf["links"] if l[0] == inp["link"])
        link[1], link[2] = reasoner["id"], 0
        reasoner["outputs"][0]["links"].append(link[0])

    def inconsistent_ids(wf):
        wf["links"][0][0] = 999

    def unconnected_required(wf):
        inp = next(i for i in node(wf, "RRRestore")["inputs"] if i["name"] == "image")
        inp["link"] = None

    return [retype_link, unknown_type, out_of_range, bad_combo, missing_widget,
            wrong_widget_type, dangling_link, wrong_socket, inconsistent_ids,
            unconnected_required]


@pytest.mark.parametrize("mutate", _mutations(), ids=lambda f: f.__name__)
def test_validator_rejects_a_broken_workflow(mutate):
    wf = load(ROOT / "workflows" / "basic_restore.json")
    validate_ui(wf)
    broken = copy.deepcopy(wf)
    mutate(broken)
    with pytest.raises(WorkflowError):
        validate_ui(broken)


def test_api_validator_rejects_a_broken_workflow():
    wf = load(ROOT / "workflows" / "api" / "basic_restore.json")
    restore = next(k for k, n in wf.items() if n["class_type"] == "RRRestore")
    reasoner = next(k for k, n in wf.items() if n["class_type"] == "RRLoadReasoner")
    broken = copy.deepcopy(wf)
    broken[restore]["inputs"]["restorer"] = [reasoner, 0]
    with pytest.raises(WorkflowError, match="fed RR_REASONER"):
        validate_api(broken)
    broken = copy.deepcopy(wf)
    broken[restore]["inputs"]["tile"] = 10
    with pytest.raises(WorkflowError, match="outside"):
        validate_api(broken)
