"""Shared fixtures: small videos written once per session with the project's own generators."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

# The probe cache normally lives in ~/.cache: the suite (and the commands it starts) use a fresh one.
os.environ["CONVLSTM_CACHE_DIR"] = tempfile.mkdtemp(prefix="convlstm-test-cache-")


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tests use tiny convolutions: on a shared 2-core box a second OpenMP thread only adds barrier
    waits (10× slower here). Subprocesses the tests start keep torch's default."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Frame counts of the index videos: varied, including one exactly one window long (4 + 2 = 6)
# and one shorter than a window, so lanes switch videos at different batches.
INDEX_LENGTHS = (23, 40, 31, 6, 57, 35, 4)


@pytest.fixture(scope="session")
def index_videos(tmp_path_factory) -> dict[Path, int]:
    """32x32 gray H.264 videos whose frame i shows the number i (`synthetic.decode_index` reads it).

    Returns:
        {path: frame count}.
    """
    from convlstm_cli.data.synthetic import write_index_video

    root = tmp_path_factory.mktemp("index_videos")
    return {write_index_video(root / f"v{i}.mp4", n, (32, 32)): n for i, n in enumerate(INDEX_LENGTHS)}


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    """Three 24-frame 32x32 bouncing-shapes videos from `make_dataset`."""
    from convlstm_cli.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("shapes")
    make_dataset(root, num=3, frames=24, size=32, seed=3)
    return root


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Six 40-frame 32x32 bouncing-shapes videos from `make_dataset`, written once per test module."""
    from convlstm_cli.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("videos")
    make_dataset(root, num=6, frames=40, size=32, seed=1)
    return root
