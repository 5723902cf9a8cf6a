"""Cut every clip of a folder into OUT/heads (first 1 − share) and OUT/tails (the rest), losslessly.

The frames are re-encoded in their own yuv420p planes at qp 0, so the pixels are the same; the cut is
where `data.val_split tail` cuts (round(n · (1 − share))).

    python scripts/split_tails.py CLIPS_DIR OUT_DIR [SHARE]
"""

import sys
from pathlib import Path

import av

src, out = Path(sys.argv[1]), Path(sys.argv[2])
share = float(sys.argv[3]) if len(sys.argv) > 3 else 0.25
for clip in sorted(src.glob("*.mp4")):
    with av.open(str(clip)) as c:
        frames = list(c.decode(video=0))
        rate = c.streams.video[0].average_rate
    cut = int(round(len(frames) * (1 - share)))
    for part, sel in (("heads", frames[:cut]), ("tails", frames[cut:])):
        (out / part).mkdir(parents=True, exist_ok=True)
        with av.open(str(out / part / clip.name), "w") as dst:
            st = dst.add_stream("libx264", rate=rate, options={"qp": "0", "preset": "ultrafast"})
            st.width, st.height, st.pix_fmt = sel[0].width, sel[0].height, "yuv420p"
            for i, f in enumerate(sel):
                f.pts, f.time_base = i, 1 / rate
                dst.mux(st.encode(f))
            dst.mux(st.encode(None))
    print(f"{clip.name}: {len(frames)} frames -> {cut} + {len(frames) - cut}")
