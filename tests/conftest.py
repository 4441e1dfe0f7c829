"""Shared fixtures: the `../shared` test material and small helpers.

Tests that read `../shared` find it through EDGEKIT_SHARED (default: `../shared` beside the repo).
Outside CI they skip when it is absent; under CI (CI=true) its absence is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    return Path(os.environ.get("EDGEKIT_SHARED", REPO_ROOT.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if not (path / "models").is_dir():
        message = f"shared test material not found at {path} (set EDGEKIT_SHARED)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def models(shared: Path) -> Path:
    return shared / "models"


@pytest.fixture(scope="session")
def tinystories(shared: Path) -> Path:
    return shared / "data" / "tinystories_valid_first112k.txt"
