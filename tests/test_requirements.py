"""A lean Space (issue 20, point 8): the app's requirements hold no training, test or export package,
the app builds and translates with those packages missing, requirements.txt still installs everything,
and each requirements-<extra>.txt is the pyproject extra of the same name."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import tomllib

from tests.helpers import ROOT

#: import name of each package the app must not need
MODULES = {"datasets": "datasets", "tensorboard": "tensorboard", "trackio": "trackio", "torchmetrics": "torchmetrics",
           "scikit-learn": "sklearn", "torch-fidelity": "torch_fidelity", "onnx": "onnx", "onnxscript": "onnxscript",
           "onnxruntime": "onnxruntime", "openvino": "openvino", "pytest": "pytest", "mypy": "mypy"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pins(filename: str) -> dict[str, str]:
    """{package: line} of a requirements file, following ``-r`` includes."""
    out: dict[str, str] = {}
    for line in (ROOT / filename).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            out.update(pins(line[3:].strip()))
        elif line:
            out[_name(line)] = line
    return out


def test_requirements_files_split_and_match_the_extras():
    app, train, export, int8, test = (pins(f"requirements-{x}.txt") for x in ("app", "train", "export", "int8", "test"))
    assert all("==" in line for f in (app, train, export, int8, test) for line in f.values())  # exact pins
    assert pins("requirements.txt") == {**app, **train, **int8, **test}  # the README's one line: everything
    assert not set(app) & (set(MODULES) | {"ruff"}), "the Space would install training, test or export packages"
    assert {"pytest", "ruff", "mypy"} == set(test) and {"onnx", "onnxscript", "onnxruntime"} == set(export)
    assert "trackio" in train and "tensorboard" in train
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {k: {_name(r) for r in v} for k, v in project["optional-dependencies"].items()}
    core = {_name(r) for r in project["dependencies"]}
    assert set(app) == core | extras["app"]  # pip install 'cut-hf[app]' == the Space
    for extra, pinned in (("train", train), ("export", export), ("int8", int8), ("test", test),
                          ("video", pins("requirements-video.txt"))):
        assert extras[extra] == set(pinned), extra


def test_the_app_builds_and_translates_without_training_test_or_export_packages(tmp_path):
    """The Space's environment, imitated: those packages cannot be imported (as if not installed);
    the app still builds, caching its examples by translating them."""
    script = (
        "import importlib.util, sys\n"
        f"for name in {sorted(MODULES.values())!r}:\n"
        "    sys.modules[name] = None  # not installed: import fails, importlib.util.find_spec says None\n"
        f"spec = importlib.util.spec_from_file_location('app', {str(ROOT / 'app.py')!r})\n"
        "app = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(app)\n"
        f"app.build_demo(examples_cache={str(tmp_path / 'cache')!r})\n"
        "print('app built')\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "app built" in proc.stdout, proc.stderr[-3000:]
    assert list((tmp_path / "cache").rglob("*.png")) or list((tmp_path / "cache").rglob("*.webp")), \
        "no example was translated and cached"
