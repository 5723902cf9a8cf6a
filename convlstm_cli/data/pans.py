"""Real-like footage, generated offline: a camera moving over real photographs.

Nothing can be downloaded, so this builds clips that behave like camera footage from photographs
that ship inside an installed package (scikit-image's sample images: people, animals, streets,
telescope and microscope images, textures). Each clip is one of:

- ``pan``: the camera drifts across a photo (smoothly changing speed and direction);
- ``zoom``: a slow zoom in or out with a little drift;
- ``fixed``: a fixed camera (a surveillance view): still background, objects moving across it;
- ``handheld``: a slow pan with a hand's small shake, and objects moving;

with objects cut from other photographs moving on their own, a little exposure flicker, sensor noise
(brighter pixels noisier, as with photon noise) and H.264 compression at a real camera's quality.
Clip sizes cycle from small (320×240) to HD (1280×720). Motion is rendered with bilinear sampling at
sub-pixel precision, so slow motion is as smooth as a real camera's.

Two disjoint sets of photographs: ``dev`` (for development: every choice of defaults) and
``held-out`` (only for the final figures, never for a decision).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from convlstm_cli.data.video import refuse_existing, write_video
from convlstm_cli.errors import InputError

PHOTOS = {
    "dev": ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
            "hubble_deep_field.jpg", "retina.jpg", "brick.png", "grass.png"),
    "held-out": ("camera.png", "ihc.png", "coins.png", "clock_motion.png", "gravel.png", "cell.png"),
}
SIZES = ((240, 320), (360, 640), (720, 1280))  # small, medium, HD
KINDS = ("pan", "zoom", "fixed", "handheld")


def photo_dir() -> Path:
    """scikit-image's folder of sample photographs (InputError when it is not installed)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the pans scene uses photographs shipped with scikit-image, which is not installed: "
                         "pip install 'convlstm-cli[scenes]'")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_photo(name: str) -> torch.Tensor:
    """A photograph as float RGB [3, H, W] in [0, 1] (gray photos repeated on 3 channels)."""
    from PIL import Image

    with Image.open(photo_dir() / name) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


@dataclass
class ClipPlan:
    """Everything that decides one clip (written to scene.json beside the videos)."""

    name: str
    kind: str
    photo: str
    sprites: list[str]
    height: int
    width: int
    frames: int
    fps: int
    crf: int
    noise: float  # sensor noise at mid-gray, in levels of 255
    seed: list[int]


def plan_clip(index: int, seed: int, photos: tuple[str, ...], frames: int | None) -> ClipPlan:
    rng = np.random.default_rng([seed, index, 0x9A5])
    height, width = SIZES[index % len(SIZES)]
    kind = KINDS[int(rng.integers(len(KINDS)))]
    photo = photos[int(rng.integers(len(photos)))]
    others = [p for p in photos if p != photo]
    n_sprites = 0 if kind in ("pan", "zoom") and rng.random() < 0.5 else int(rng.integers(1, 4))
    sprites = [others[int(i)] for i in rng.integers(len(others), size=n_sprites)]
    return ClipPlan(f"pans_{index:04d}", kind, photo, sprites, height, width,
                    frames or int(rng.integers(150, 301)), int(rng.choice([25, 30])), int(rng.integers(20, 27)),
                    float(rng.uniform(1.0, 3.0)), [seed, index])


def _camera_path(plan: ClipPlan, rng: np.random.Generator, photo_hw: tuple[int, int]):
    """Per frame: the view's centre (y, x) in photo pixels and its scale (output pixels per photo pixel)."""
    ph, pw = photo_hw
    fit = max(plan.height / ph, plan.width / pw)  # the smallest scale whose view stays inside the photo
    scale = fit * rng.uniform(1.0, 1.6)
    centre = np.array([ph / 2, pw / 2]) + rng.uniform(-0.2, 0.2, 2) * np.array([ph, pw])
    speed = {"pan": 2.5, "zoom": 0.4, "fixed": 0.0, "handheld": 1.0}[plan.kind]
    vel = rng.normal(0, 1, 2)
    vel = vel / (np.linalg.norm(vel) + 1e-9) * speed / scale * rng.uniform(0.3, 1.0)  # photo px per frame
    dzoom = rng.choice([-1, 1]) * rng.uniform(0.002, 0.006) if plan.kind == "zoom" else 0.0
    out = []
    for _ in range(plan.frames):
        shake = rng.normal(0, 0.6, 2) / scale if plan.kind == "handheld" else 0.0
        half = np.array([plan.height, plan.width]) / (2 * scale)
        lo, hi = half, np.array([ph, pw]) - half
        centre = np.clip(centre, lo, np.maximum(hi, lo))
        out.append((centre + shake, scale))
        if plan.kind != "fixed":  # a smoothly varying velocity; it turns back at the photo's edges
            vel = 0.98 * vel + rng.normal(0, 0.03 * speed, 2) / scale
            vel = np.where((centre + vel < lo) | (centre + vel > hi), -vel, vel)
            centre = centre + vel
        scale = max(fit, scale * (1 + dzoom))
    return out


def _grid(h: int, w: int, centre, scale: float, src_hw: tuple[int, int]) -> torch.Tensor:
    """Sampling grid for grid_sample: output pixel → source pixel (align_corners=False coordinates)."""
    sh, sw = src_hw
    ys = (torch.arange(h, dtype=torch.float32) + 0.5 - h / 2) / scale + float(centre[0])
    xs = (torch.arange(w, dtype=torch.float32) + 0.5 - w / 2) / scale + float(centre[1])
    gy, gx = torch.meshgrid(ys / sh * 2 - 1, xs / sw * 2 - 1, indexing="ij")
    return torch.stack([gx, gy], dim=-1)[None]


class Sprite:
    """An object cut from a photograph (a soft-edged ellipse) moving across the frame."""

    def __init__(self, texture: torch.Tensor, plan: ClipPlan, rng: np.random.Generator):
        h, w = plan.height, plan.width
        self.radius = np.array([rng.uniform(0.07, 0.16), rng.uniform(0.07, 0.16)]) * h
        th, tw = texture.shape[-2:]
        cy, cx = rng.uniform(0.3, 0.7) * th, rng.uniform(0.3, 0.7) * tw
        side = int(min(th, tw) * rng.uniform(0.25, 0.45))
        self.texture = texture[:, int(cy - side / 2): int(cy + side / 2), int(cx - side / 2): int(cx + side / 2)]
        self.pos = rng.uniform(0.2, 0.8, 2) * np.array([h, w])
        angle = rng.uniform(0, 2 * np.pi)
        self.vel = rng.uniform(0.4, 2.5) * h / 240 * np.array([np.sin(angle), np.cos(angle)])
        self.size = np.array([h, w])

    def draw(self, frame: torch.Tensor) -> None:
        """Composite onto frame [3, H, W] in place, then move (bouncing off the frame's edges)."""
        h, w = frame.shape[-2:]
        (cy, cx), (ry, rx) = self.pos, self.radius
        y0, y1 = max(0, int(cy - ry) - 2), min(h, int(cy + ry) + 3)  # only the box around the object
        x0, x1 = max(0, int(cx - rx) - 2), min(w, int(cx + rx) + 3)
        if y1 > y0 and x1 > x0:
            ys = (torch.arange(y0, y1, dtype=torch.float32) + 0.5 - float(cy)) / float(ry)
            xs = (torch.arange(x0, x1, dtype=torch.float32) + 0.5 - float(cx)) / float(rx)
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            alpha = ((1 - (gy.square() + gx.square()).sqrt()) * float(min(ry, rx)) / 1.5).clamp(0, 1)  # soft edge
            grid = torch.stack([gx, gy], dim=-1)[None].clamp(-1.2, 1.2)
            tex = F.grid_sample(self.texture[None], grid, mode="bilinear", align_corners=False)[0]
            box = frame[:, y0:y1, x0:x1]
            box.mul_(1 - alpha).add_(tex * alpha)
        self.pos = self.pos + self.vel
        for axis in range(2):
            if not self.radius[axis] <= self.pos[axis] <= self.size[axis] - self.radius[axis]:
                self.vel[axis] = -self.vel[axis]


def render_clip(plan: ClipPlan) -> np.ndarray:
    """uint8 [T, H, W, 3] frames of one clip (before compression)."""
    rng = np.random.default_rng(plan.seed)
    photo = load_photo(plan.photo)
    sprites = [Sprite(load_photo(name), plan, rng) for name in plan.sprites]
    path = _camera_path(plan, rng, tuple(photo.shape[-2:]))
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    flicker = 1 + 0.015 * np.sin(np.arange(plan.frames) * rng.uniform(0.05, 0.2) + rng.uniform(0, 6))
    out = np.empty((plan.frames, plan.height, plan.width, 3), np.uint8)
    for t, (centre, scale) in enumerate(path):
        grid = _grid(plan.height, plan.width, centre, scale, tuple(photo.shape[-2:]))
        frame = F.grid_sample(photo[None], grid, mode="bilinear", align_corners=False, padding_mode="border")[0]
        for sprite in sprites:
            sprite.draw(frame)
        frame = frame * float(flicker[t])
        # Sensor noise: variance grows with brightness (photon noise) on top of a read-noise floor.
        sigma = plan.noise / 255 * (0.5 + frame.clamp(0, 1)).sqrt()
        frame = frame + sigma * torch.randn(frame.shape, generator=gen)
        out[t] = frame.mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    return out


def make_pans(out_dir, num: int = 3, frames: int | None = None, seed: int = 0, held_out: bool = False,
              overwrite: bool = False) -> list[Path]:
    """Write `num` real-like clips (see the module docstring) and scene.json describing them.

    Args:
        out_dir: Directory (created if missing).
        num: Number of clips; sizes cycle small, medium, HD.
        frames: Frames per clip (default: 150-300, drawn per clip).
        seed: Clip i depends only on (seed, i) and the photo set.
        held_out: Use the held-out photographs (for final figures only).
        overwrite: Replace clips of the same names.

    Returns:
        The files written.
    """
    if num < 1 or (frames is not None and frames < 2):
        raise InputError(f"make-data --scene pans: need num >= 1 and frames >= 2 (got num={num}, frames={frames})")
    out_dir = Path(out_dir)
    photos = PHOTOS["held-out" if held_out else "dev"]
    plans = [plan_clip(i, seed + (10_000 if held_out else 0), photos, frames) for i in range(num)]
    paths = [out_dir / f"{p.name}.mp4" for p in plans]
    refuse_existing(paths, overwrite)
    photo_dir()  # fail early, before writing anything, when the photographs are missing
    for plan, path in zip(plans, paths):
        write_video(path, render_clip(plan), fps=plan.fps, crf=plan.crf, options={"preset": "medium"})
    meta = {"scene": "pans", "photos": "held-out" if held_out else "dev", "clips": [asdict(p) for p in plans]}
    (out_dir / "scene.json").write_text(json.dumps(meta, indent=1))
    return paths
