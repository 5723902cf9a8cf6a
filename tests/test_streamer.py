"""ClipStreamer: frame-exact windows, resets, epochs, rank shards, exact resume, broken videos, cache."""

from __future__ import annotations

import io
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from convlstm_cli.data import prefetch
from convlstm_cli.data.probe import VideoInfo, probe_video
from convlstm_cli.data.streamer import ClipStreamer
from convlstm_cli.data.synthetic import decode_index, write_index_video
from convlstm_cli.data.video import read_frames
from convlstm_cli.errors import InputError, NoUsableVideoError

CONTEXT, HORIZON = 4, 2
SPAN = CONTEXT + HORIZON


def make(videos, **kw) -> ClipStreamer:
    args = {"batch_size": 3, "context": CONTEXT, "horizon": HORIZON, "size": (32, 32), "workers": 2, "seed": 7}
    return ClipStreamer(list(videos), **{**args, **kw})


def take(streamer: ClipStreamer, n: int | None = None, states: list | None = None) -> list:
    """Up to n batches; with ``states``, the state_dict right after each batch (as training does)."""
    out = []
    for batch in streamer:
        out.append(batch)
        if states is not None:
            states.append(streamer.state_dict())
        if n is not None and len(out) == n:
            break
    return out


def expected_windows(lengths: dict, stride: int = 1) -> set[tuple[str, int]]:
    """Every (video, start) a pass must play, computed from the frame counts alone."""
    out = set()
    for path, n in lengths.items():
        strided = -(-n // stride)
        out |= {(str(path), s) for s in range(0, strided - SPAN + 1, CONTEXT)}
    return out


def played(batches) -> list[tuple[str, int]]:
    return [(v, s) for b in batches for v, s, ok in zip(b.videos, b.starts, b.valid.tolist(), strict=True) if ok]


def assert_same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (x.videos, x.starts, x.epoch) == (y.videos, y.starts, y.epoch)
        assert torch.equal(x.reset, y.reset) and torch.equal(x.valid, y.valid)
        assert torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets)


def test_windows_line_up_frame_exactly_and_resets_mark_switches(index_videos):
    s = make(index_videos, loop=False)
    batches = take(s)
    assert [Path(k.path).name for k in s.skipped] == ["v6.mp4"] and "too short" in s.skipped[0].reason
    previous: list = [None] * 3
    for k, b in enumerate(batches):
        assert b.inputs.shape == (3, CONTEXT, 1, 32, 32) and b.inputs.dtype == torch.uint8
        assert b.targets.shape == (3, HORIZON, 1, 32, 32) and b.reset.dtype == torch.bool
        for lane in range(3):
            if not b.valid[lane]:
                assert b.videos[lane] is None and not b.reset[lane]
                assert not b.inputs[lane].any() and not b.targets[lane].any()
                previous[lane] = None
                continue
            start = b.starts[lane]
            assert list(decode_index(b.inputs[lane].numpy())) == list(range(start, start + CONTEXT))
            assert list(decode_index(b.targets[lane].numpy())) == list(range(start + CONTEXT, start + SPAN))
            prev = previous[lane]
            switched = prev is None or prev[0] != b.videos[lane]
            assert bool(b.reset[lane]) == switched == (start == 0), (k, lane)
            if not switched:  # the lane continues where its inputs ended: last targets = new inputs
                assert start == prev[1] + CONTEXT
                assert torch.equal(b.inputs[lane, :HORIZON], prev[2])
            previous[lane] = (b.videos[lane], start, b.targets[lane])
    windows = played(batches)
    assert len(windows) == len(set(windows))  # nothing twice ...
    assert set(windows) == expected_windows({p: n for p, n in index_videos.items() if n >= SPAN})  # ... nothing missed
    assert not batches[-1].valid.all()  # the pass ends with idle lanes, then stops
    # The pixels are the video's own frames at that position, as an independent decode gives them.
    b = batches[3]
    for lane in range(3):
        frames = read_frames(b.videos[lane], (32, 32), 1, start=b.starts[lane], count=SPAN)
        assert torch.equal(b.inputs[lane], torch.from_numpy(frames[:CONTEXT]))
        assert torch.equal(b.targets[lane], torch.from_numpy(frames[CONTEXT:]))


def test_stride_and_resize(index_videos):
    s = make(index_videos, loop=False, stride=2, size=(16, 24), workers=1)
    batches = take(s)
    assert batches[0].inputs.shape == (3, CONTEXT, 1, 16, 24)
    for b in batches:
        for lane in np.flatnonzero(b.valid.numpy()):
            start = b.starts[lane]
            assert list(decode_index(b.inputs[lane].numpy())) == [2 * (start + i) for i in range(CONTEXT)]
            assert list(decode_index(b.targets[lane].numpy())) == [2 * (start + i) for i in range(CONTEXT, SPAN)]
    assert set(played(batches)) == expected_windows({p: n for p, n in index_videos.items() if -(-n // 2) >= SPAN}, 2)


def test_loop_plays_each_video_once_per_epoch_in_a_new_order(index_videos):
    s = make(index_videos, batch_size=2)
    draws, epochs = [], []
    for b in s:
        for lane in np.flatnonzero(b.reset.numpy()):
            draws.append(b.videos[lane])
        epochs.append(b.epoch)
        if b.epoch == 4:
            break
    n = len(s.videos)
    assert n == 6
    orders = [draws[i : i + n] for i in range(0, 4 * n, n)]
    assert all(sorted(o) == sorted(v.path for v in s.videos) for o in orders)  # each once per epoch
    assert len({tuple(o) for o in orders}) > 1  # reshuffled
    assert epochs == sorted(epochs) and set(epochs) == {0, 1, 2, 3, 4}
    assert s.epoch == 4
    assert all(b.valid.all() for b in take(make(index_videos, batch_size=2), 40))  # lanes never idle


def test_rank_shards_are_disjoint_and_complete(index_videos):
    shares = [make(index_videos, rank=r, world_size=4, loop=False) for r in range(4)]
    paths = [{v.path for v in s.videos} for s in shares]
    assert all(paths) and sum(len(p) for p in paths) == 6 == len(set().union(*paths))
    assert set().union(*paths) == {str(p) for p, n in index_videos.items() if n >= SPAN}
    for s, mine in zip(shares, paths, strict=True):
        assert {v for v, _ in played(take(s))} == mine
    with pytest.raises(NoUsableVideoError, match="rank 6 of 7 has no video"):
        make(index_videos, rank=6, world_size=7)


@pytest.mark.parametrize("loop", [True, False])
def test_restored_streamer_yields_exactly_the_next_batches(index_videos, loop):
    original_states: list = []
    original = take(make(index_videos, loop=loop), 26 if loop else None, original_states)
    epochs = [b.epoch for b in original]
    cuts = [3, 9]  # mid-epoch (and mid-video in some lanes) ...
    if loop:  # ... and the batch right before an epoch change
        cuts.append(next(k for k in range(len(epochs) - 1) if epochs[k + 1] != epochs[k]))
    for k in cuts:
        buffer = io.BytesIO()
        torch.save(original_states[k], buffer)
        buffer.seek(0)
        state = torch.load(buffer, weights_only=True)
        restored = make(index_videos, loop=loop, workers=k % 3)  # thread count does not matter
        restored.load_state_dict(state)
        assert restored.epoch == original[k].epoch
        rest = original[k + 1 :]
        assert_same(take(restored, len(rest)), rest)


def test_after_a_complete_pass_the_next_pass_starts(index_videos):
    s = make(index_videos, loop=False, shuffle=False, workers=0)
    first, second = take(s), take(s)
    assert [b.epoch for b in second] == [1] * len(second)
    assert played(first) == played(second)
    s.rewind()
    assert played(take(s, 2)) == played(first[:2])


def test_stopping_early_shuts_the_threads_down(index_videos):
    s = make(index_videos, workers=3, prefetch=2)
    it = iter(s)
    next(it)
    assert any(t.name.startswith("clip-decode") for t in threading.enumerate())
    it.close()
    assert not any(t.name.startswith("clip-decode") for t in threading.enumerate())
    for _ in s:  # break out of a for loop and drop the iterator: the generator's finally runs
        break
    assert not any(t.name.startswith("clip-decode") for t in threading.enumerate())
    with make(index_videos) as s2:
        next(iter(s2))
    assert not any(t.name.startswith("clip-decode") for t in threading.enumerate())


def test_a_video_that_breaks_mid_stream_ends_where_it_broke(index_videos):
    paths = sorted(index_videos, key=str)
    truthful = [probe_video(p) for p in paths]
    lying = [VideoInfo(**{**vars(v), "frames": v.frames + 17}) if v.frames == 23 else v for v in truthful]
    honest = take(make(truthful, batch_size=2), 30)
    s = make(lying, batch_size=2)
    broken = take(s, 30)
    assert_same(broken, honest)  # windows before the break kept, the lane moved on at the break
    assert [Path(p.path).name for p in s.problems] == ["v0.mp4"]
    assert "ended after 23 frames, the probe counted 40" in s.problems[0].reason
    # The break is part of the saved state: a restored streamer plans around it from the start.
    states: list = []
    take(make(lying, batch_size=2), 12, states)
    restored = make(lying, batch_size=2)
    restored.load_state_dict(states[-1])
    assert_same(take(restored, 18), honest[12:])


def test_a_file_gone_while_streaming_is_reported_and_skipped(index_videos, tmp_path):
    paths = []
    for p in index_videos:
        paths.append(tmp_path / p.name)
        shutil.copy(p, paths[-1])
    infos = [probe_video(p) for p in paths]
    s = make(infos, loop=False)
    (tmp_path / "v1.mp4").unlink()
    batches = take(s)
    assert [(Path(p.path).name, p.reason) for p in s.problems] == [("v1.mp4", "no such file")]
    alive = {p: n for p, n in zip(paths, (v.frames for v in infos), strict=True) if p.name != "v1.mp4" and n >= SPAN}
    assert set(played(batches)) == expected_windows(alive)
    for p in paths[:3]:
        p.unlink(missing_ok=True)
    assert take(make(infos[:3], loop=False)) == []  # a pass with nothing playable is empty ...
    with pytest.raises(NoUsableVideoError, match="every video failed while streaming"):
        take(make(infos[:3]), 5)  # ... and an endless one says so instead of spinning


def test_cache_serves_later_epochs_without_decoding(index_videos, tmp_path, monkeypatch):
    reference = take(make(index_videos, batch_size=2), 40)
    warm = take(make(index_videos, batch_size=2, cache_dir=tmp_path), 40)
    assert_same(warm, reference)
    assert_same([b.to("cpu") for b in warm[:2]], reference[:2])
    assert len(list(tmp_path.glob("*.npy"))) == 6 and not list(tmp_path.glob(".*"))  # no temp files

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the frames are cached")

    monkeypatch.setattr(prefetch, "iter_frames", no_decoding)
    assert_same(take(make(index_videos, batch_size=2, cache_dir=tmp_path), 40), reference)


def test_cache_key_follows_content_not_name(index_videos, tmp_path):
    from convlstm_cli.data.cache import FrameCache

    cache = FrameCache(tmp_path / "cache")
    source = next(p for p, n in index_videos.items() if n == 23)
    copy = shutil.copy(source, tmp_path / "renamed.mp4")
    writer = cache.writer(source, (8, 8), 1, 1, 2)
    writer.write(np.ones((1, 8, 8), np.uint8))
    writer.write(np.full((1, 8, 8), 2, np.uint8))
    assert writer.commit()
    assert cache.load(copy, (8, 8), 1, 1)[:, 0, 0, 0].tolist() == [1, 2]
    assert cache.load(copy, (8, 8), 1, 2) is None and cache.load(copy, (8, 8), 3, 1) is None
    other = write_index_video(tmp_path / "other.mp4", 23, (32, 24))
    assert cache.load(other, (8, 8), 1, 1) is None
    short = cache.writer(other, (8, 8), 1, 1, 3)
    short.write(np.zeros((1, 8, 8), np.uint8))
    assert not short.commit() and cache.load(other, (8, 8), 1, 1) is None  # incomplete: not published


def test_no_usable_video_and_bad_arguments(index_videos, tmp_path):
    (tmp_path / "junk.mp4").write_text("junk")
    short = [p for p, n in index_videos.items() if n < SPAN]
    with pytest.raises(NoUsableVideoError, match=r"no usable video among 2 given .*junk.mp4: not a readable video"):
        make([tmp_path / "junk.mp4", *short])
    with pytest.raises(InputError, match="context must be a positive integer"):
        make(index_videos, context=0)


def test_state_of_another_streamer_is_refused(index_videos):
    state = make(index_videos).state_dict()
    with pytest.raises(InputError, match="batch_size=3, this streamer has 2"):
        make(index_videos, batch_size=2).load_state_dict(state)
    fewer = [p for p, n in index_videos.items() if n != 31]
    with pytest.raises(InputError, match="v2.mp4"):
        make(fewer).load_state_dict(state)
