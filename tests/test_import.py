"""ComfyUI imports every pack at start-up: ours must be quick and must not pull in torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import importlib.util, json, sys, time
t0 = time.perf_counter()
try:
    import reason_restore as pack
except ImportError:  # not installed: load the checkout the way ComfyUI does, by folder
    spec = importlib.util.spec_from_file_location(
        "reason_restore", sys.argv[1] + "/__init__.py", submodule_search_locations=[sys.argv[1]])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["reason_restore"] = pack
    spec.loader.exec_module(pack)
elapsed = time.perf_counter() - t0
print(json.dumps({"elapsed": elapsed, "torch": "torch" in sys.modules,
                  "numpy": "numpy" in sys.modules, "nodes": len(pack.NODE_CLASS_MAPPINGS),
                  "all": sorted(pack.__all__)}))
"""


def test_import_is_fast_and_torch_free():
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT)], capture_output=True,
                         text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["torch"] is False, "importing the pack imported torch"
    assert info["elapsed"] < 1.0, f"import took {info['elapsed']:.2f} s"
    from reason_restore import NODE_CLASS_MAPPINGS  # every registered node came along
    assert info["nodes"] == len(NODE_CLASS_MAPPINGS) >= 10
    assert info["all"] == ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]


def test_input_types_do_not_import_torch():
    """Building the node definitions (ComfyUI's /object_info) stays torch-free too."""
    code = ("import sys, reason_restore as p\n"
            "[c.INPUT_TYPES() for c in p.NODE_CLASS_MAPPINGS.values()]\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=str(ROOT.parent))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_loads_under_any_folder_name(tmp_path):
    """ComfyUI loads custom_nodes/<any.folder-name>/__init__.py under a module name made from
    the folder path (as nodes.load_custom_node does): relative imports only."""
    folder = tmp_path / "custom_nodes" / "ComfyUI-ReasonRestore.v2-main"
    folder.parent.mkdir()
    folder.symlink_to(ROOT, target_is_directory=True)
    code = ("import importlib.util, os, sys\n"
            f"path = {str(folder)!r}\n"
            "name = path.replace('.', '_x_')\n"
            "spec = importlib.util.spec_from_file_location(name, os.path.join(path, "
            "'__init__.py'))\n"
            "m = importlib.util.module_from_spec(spec); sys.modules[name] = m\n"
            "spec.loader.exec_module(m)\n"
            "print(sorted(m.NODE_DISPLAY_NAME_MAPPINGS.values())[0], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Build Prior Prompt False"
