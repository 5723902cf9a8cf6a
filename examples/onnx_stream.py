"""Stream a clip through an exported model with onnxruntime, numpy and PyAV only (no torch, no convlstm_cli).

    convlstm export runs/shapes --format onnx --out model.onnx --chunk 8
    python examples/onnx_stream.py model.onnx clip.mp4
"""

import json
import sys

import av
import numpy as np
import onnxruntime as ort

model, clip = sys.argv[1], sys.argv[2]
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
(h, w), n, gray = meta["frame_size"], meta["chunk"], meta["channels"] == 1
# Zero state to start: level l is [batch, C_l, H_l, W_l] (the shapes are in the file's metadata).
state = [np.zeros((1, *shape), np.float32) for shape in meta["state_shapes"] for _ in "hc"]


def frames(path):
    """Frames as the model was trained on them: scaled so the short side fits, centre-cropped (resize: crop)."""
    with av.open(path) as container:
        for frame in container.decode(video=0):
            s = max(h / frame.height, w / frame.width)
            bh, bw = max(h, round(frame.height * s)), max(w, round(frame.width * s))
            img = frame.reformat(width=bw, height=bh, format="gray" if gray else "rgb24", interpolation="AREA")
            a = img.to_ndarray()
            a = a[None] if gray else a.transpose(2, 0, 1)
            y, x = (bh - h) // 2, (bw - w) // 2
            yield a[:, y : y + h, x : x + w]


chunk, done, errors = [], 0, []
for f in frames(clip):
    chunk.append(f)
    if len(chunk) == n:
        x = np.stack(chunk)[None].astype(np.float32) / 255  # [1, N, C, H, W]
        pred, *state = session.run(meta["outputs"], dict(zip(meta["inputs"], [x, *state])))
        # pred [1, N, K, C, H, W]: frame t's forecast of t+1 … t+K; score t+1 inside the chunk
        errors += [float(np.mean((pred[0, i, 0] - x[0, i + 1]) ** 2)) for i in range(n - 1)]
        done, chunk = done + n, []
psnr = np.mean([10 * np.log10(1 / max(e, 1e-10)) for e in errors])
print(f"{done} frames streamed in chunks of {n}; one-step PSNR {psnr:.2f} dB over {len(errors)} frames")
