"""The distribution: a wheel holding every subpackage and data file, and a torch-free edge runtime."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
import zipfile
from fnmatch import fnmatch
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
PACKAGE_DIRS = PYPROJECT["tool"]["setuptools"]["package-dir"]


def source_packages() -> dict[str, Path]:
    """Every importable package in the tree, by dotted name, following the package-dir mapping."""
    found = {}
    for top, folder in PACKAGE_DIRS.items():
        root = REPO_ROOT / folder
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root).parts
            found[".".join((top, *rel))] = init.parent
    return found


def expected_data_files() -> set[str]:
    files = set()
    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    for package, patterns in data.items():
        folder = REPO_ROOT / PACKAGE_DIRS.get(package, package.replace(".", "/"))
        base = package.replace(".", "/")
        for path in folder.rglob("*"):
            rel = path.relative_to(folder).as_posix()
            if path.is_file() and any(fnmatch(rel, p) for p in patterns):
                files.add(f"{base}/{rel}")
    return files


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out),
                    str(REPO_ROOT)], check=True, capture_output=True, timeout=600)
    (path,) = out.glob("edgekit-*.whl")
    return zipfile.ZipFile(path)


def test_every_subpackage_is_in_the_wheel(wheel):
    names = set(wheel.namelist())
    packages = source_packages()
    assert {"edgekit", "edgekit.quantize", "edgekit.hls", "edgekit.fpga", "edgekit.cloud_bridge",
            "edgekit.boards", "edgekit.model", "edgekit.runtime", "edgekit.cli"} <= set(packages)
    for dotted, folder in packages.items():
        for module in folder.glob("*.py"):
            assert f"{dotted.replace('.', '/')}/{module.name}" in names, module


def test_every_data_file_is_in_the_wheel(wheel):
    expected = expected_data_files()
    assert any(name.endswith("kv260.toml") for name in expected)
    assert expected <= set(wheel.namelist())


def test_wheel_declares_the_cli_and_small_runtime_dependencies(wheel):
    meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    text = wheel.read(meta).decode()
    required = [line.split(":", 1)[1].strip() for line in text.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert sorted(r.split(">")[0].split("=")[0] for r in required) == sorted(
        ["numpy", "safetensors", "gguf", "tokenizers", "sentencepiece", "typer", "rich"])
    entry = next(n for n in wheel.namelist() if n.endswith("entry_points.txt"))
    assert "edgekit = edgekit.cli.main:main" in wheel.read(entry).decode()


def test_edge_runtime_runs_a_model_without_importing_torch(models):
    script = textwrap.dedent(f"""
        import sys
        from edgekit.model import load
        from edgekit.runtime import generate_tokens, open_backend
        from edgekit.quantize.evaluate import evaluate_perplexity
        for path in [{str(models / 'stories260K.gguf')!r}, {str(models / 'stories260K_hf')!r},
                     {str(models / 'bitnet' / 'bitllama2c_1M_ternary_msbfirst.bin')!r}]:
            model = load(path)
            tokens = list(generate_tokens(open_backend(model), [1], 8))
            assert len(tokens) == 8
        assert "torch" not in sys.modules, "torch was imported"
        assert "transformers" not in sys.modules, "transformers was imported"
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
