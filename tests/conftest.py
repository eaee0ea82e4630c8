"""Shared fixtures. Nothing here reads ../shared unless a test asks for ``shared_data``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

# The suite tests the checkout's models: a shell that exported EDGEFER_MANIFEST for a scratch
# copy (README, "The model") must not turn the shipped-model tests on that copy.
os.environ.pop("EDGEFER_MANIFEST", None)
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tools.openai_stub and other helpers shared with tools/
SHARED_DATA = Path(os.environ.get("EDGEFER_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (research-only datasets); tests that need it skip cleanly without it."""
    if not (SHARED_DATA / "fer2013").is_dir():
        pytest.skip(f"research data not available at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def portrait() -> np.ndarray:
    """matplotlib's public-domain Grace Hopper portrait (BGR, 600x512)."""
    import cv2

    from edgefer.apps.demo import portrait_path

    return cv2.imread(str(portrait_path()))


@pytest.fixture(scope="session")
def demo_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 5 s demo clip (150 frames, one face, then two), written once per session."""
    from edgefer.apps.demo import write_demo_clip

    return write_demo_clip(tmp_path_factory.mktemp("clip") / "demo.mp4")


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300):
    """Run the real ``edgefer`` entry point in a subprocess."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "edgefer", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


def assert_one_line_error(result, code, *needles):
    """Exit ``code``, no traceback, and exactly one ``error:`` line that holds every needle
    (a message wrapped over several lines fails: its needles would not share the line)."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], result.stderr
