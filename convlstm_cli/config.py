"""Run configuration: YAML file → typed dataclasses → command-line overrides → checked.

The resolved config is written to the run directory (`config.yaml`) and into every checkpoint, so a
checkpoint alone rebuilds its model and data pipeline. Unknown keys and wrong types are `ConfigError`s
that name the key and, for typos, suggest the nearest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from convlstm_cli import atomic
from convlstm_cli.blackout import FILLS, REGIONS
from convlstm_cli.errors import ConfigError
from convlstm_cli.losses import LOSSES
from convlstm_cli.model.forecaster import ModelConfig

# The sample configs ship inside the package (package data), so a regular install finds them too.
SAMPLE_CONFIGS = Path(__file__).resolve().parent / "configs"


@dataclass
class AugmentConfig:
    """Training augmentation, drawn per lane and per pass over a video (`convlstm_cli.data.view`)."""

    zoom: float = 1.3  # largest zoom: a pass crops between 1/zoom and all of the frame (1 = off)
    flip: float = 0.5  # probability of a horizontal flip
    reverse: float = 0.0  # probability of playing a pass backwards in time (off: gravity is not reversible)
    brightness: float = 0.1  # largest brightness shift (0.1 = ±10 % of the range)
    contrast: float = 0.1  # largest relative contrast change (0.1 = ×0.9 … ×1.1)


@dataclass
class DataConfig:
    """How videos become batches (see `convlstm_cli.data.streamer`)."""

    size: int | tuple[int, int] = 64  # frame height and width (an int means square)
    channels: int = 1  # 1 gray, 3 RGB
    context: int = 10  # input frames per chunk (the TBPTT window); targets are the next `model.horizon`
    stride: int = 1  # temporal stride of decoding (keep every n-th frame)
    batch_size: int = 8  # lanes: videos played side by side
    workers: int = 2  # background decoding threads
    prefetch: int = 4  # batches decoded ahead
    # keep decoded frames (uint8, memory-mapped) so later epochs skip decoding; auto: when they fit the budget
    cache: bool | str = "auto"  # auto | true | false
    cache_dir: str | None = None  # default: <run dir>/cache
    cache_budget_gb: float = 10.0  # auto: the most disk the cache may take (never over half the free space)
    resize: str = "crop"  # crop | pad | stretch: how another aspect ratio reaches `size`
    layout: str = "auto"  # arrays: auto | TNHW | NTHW | NTCHW | NTHWC (| THW | TCHW | THWC for one sequence)
    range: tuple[float, float] | None = None  # arrays of numbers: the values that map to black and white
    val_dir: str | None = None  # validation videos; default: data.val_split of the training videos
    val_split: str = "auto"  # auto | videos | tail: hold out whole videos, or the end of every video
    val_fraction: float = 0.1  # videos split: share of videos held out (at least one)
    val_tail: float = 0.25  # tail split: share of every video's frames held out at its end
    val_max_videos: int = 16  # validation plays at most this many videos
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def hw(self) -> tuple[int, int]:
        return (self.size, self.size) if isinstance(self.size, int) else (int(self.size[0]), int(self.size[1]))


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping of `convlstm train`."""

    max_steps: int = 2000  # total optimizer steps of the run (a resumed run continues to this total)
    epochs: int | None = None  # stop after this many passes over the training videos (whichever first)
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05  # cosine decays to lr · min_lr_ratio at max_steps
    grad_clip: float = 1.0  # max global grad norm (0 disables)
    loss: str = "mse"  # mse (what PSNR scores) | charbonnier (a smooth L1; failed to fit some footage) | l1
    hard_pixels: float = 0.0  # add the mean |error| of this share of each frame's worst pixels (0: off)
    hard_weight: float = 0.1  # ... weighted this much against the loss (see convlstm_cli.losses)
    precision: str = "auto"  # auto (bf16 where supported) | bf16 | fp32
    # memory layout; auto = channels_last on a GPU or in bf16, else the faster of the two timed (layout.py)
    channels_last: bool | str = "auto"  # auto | true | false
    # torch.compile the model; auto = on a GPU only (see device.resolve_compile)
    compile: bool | str = "auto"  # auto | true | false
    # torch.compile mode; "reduce-overhead" also replays each step as CUDA graphs (cuda only)
    compile_mode: str = "default"  # default | reduce-overhead | max-autotune-no-cudagraphs
    detach_every: int = 1  # TBPTT: detach the carried state every N chunks (backprop through N chunks)
    detach_schedule: str = ""  # curriculum of truncation lengths: "2@600,4@900" = every 2 chunks from step 600, 4 from 900
    blackout: float = 0.0  # observation dropout: share of lanes per step whose later input frames are hidden
    blackout_region: str = "frame"  # frame | band (a vertical band of the frame; see convlstm_cli.blackout)
    blackout_fill: str = "freeze"  # freeze (the lane's last shown frame) | noise | black
    state_reset: float = 0.125  # share of lanes that start each step from zero state mid-video (cold starts)
    state_reset_at: str = "step"  # step | chunk: draw cold starts at each step's start, or at every chunk's
    dense_loss: bool = True  # also supervise the one-step prediction from every frame of a chunk
    ema: float = 0.995  # keep an average of the weights with this decay (0: off) for validation and predict
    stateless: bool = False  # reset the state every chunk (for comparison with stateful training)
    seed: int = 0
    device: str = "auto"
    log_every: int = 25
    eval_every: int = 500  # steps between validations (and at step 0 and at the end)
    patience: int = 8  # stop after this many validations without a better one (0: never stop early)
    save_every: int = 200  # steps between `last` checkpoints (and always at the end)
    keep_last: int = 3  # also keep the last N step checkpoints (0: only last/best)
    max_bad_steps: int = 20  # stop after this many consecutive non-finite steps
    tensorboard: bool = True  # log to <run>/tb when tensorboard is installed


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# -- conversion -------------------------------------------------------------------------------------


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check/convert one value against a type hint; ConfigError names the key on failure."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key {key}: {value!r} is not a valid {_type_name(hint)}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key}: expected a list, got {value!r}")
        inner = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, inner, key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"config key {key}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"config key {key}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"config key {key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"config key {key}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key {key}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key {key}: expected a string, got {value!r}")
    raise ConfigError(f"config key {key}: unsupported type {hint}")


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _suggest(key: str, options: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    if close:
        return f" (did you mean {prefix}{close[0]}?)"
    return f" (valid keys: {', '.join(prefix + o for o in options)})"


def _build(cls, data: dict, prefix: str):
    """A `cls` dataclass from a dict: defaults for missing keys, errors for unknown ones."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix or 'root'}: expected a mapping, got {data!r}")
    hints = _hints(cls)
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in hints:
            raise ConfigError(f"unknown config key {full}{_suggest(str(key), list(hints), prefix)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value or {}, f"{full}.")
        else:
            kwargs[key] = _coerce(value, hint, full)
    return cls(**kwargs)


# Keys added after the first version, with the value that keeps an older checkpoint's behaviour.
UPGRADES = {"model.output": "logit", "data.resize": "stretch"}


def upgrade(saved: dict) -> dict:
    """A checkpoint's config from before a key existed, with the value that keeps its behaviour."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in (saved or {}).items()}
    for dotted, old in UPGRADES.items():
        section, key = dotted.split(".")
        out.setdefault(section, {}).setdefault(key, old)
    return out


def from_dict(data: dict) -> RunConfig:
    """A checked RunConfig from nested plain values (e.g. parsed YAML or a checkpoint's config)."""
    cfg = _build(RunConfig, data or {}, "")
    check(cfg)
    return cfg


def to_dict(cfg) -> dict:
    """Nested plain values (tuples as lists): YAML- and `torch.load(weights_only=True)`-safe."""

    def plain(v):
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def parse_set(items: list[str]) -> dict:
    """`section.key=value` strings → nested dict; values parsed as YAML scalars."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        path, raw = item.split("=", 1)
        parts = [p for p in path.strip().split(".") if p]
        if len(parts) < 2:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.lr=1e-3")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        out = merge(out, _nest(".".join(parts), value))
    return out


def merge(base: dict, over: dict) -> dict:
    """Deep-merge `over` into a copy of `base`."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_config_path(name: str | Path) -> Path:
    """A config file path; a bare name like `quickstart` finds the sample config convlstm_cli/configs/quickstart.yaml."""
    p = Path(name)
    if p.is_file():
        return p
    for cand in (SAMPLE_CONFIGS / f"{name}.yaml", SAMPLE_CONFIGS / str(name)):
        if cand.is_file():
            return cand
    raise ConfigError(f"{name}: no such config file")


def load_yaml(path: str | Path) -> dict:
    p = resolve_config_path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"{p}: not valid YAML{where}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read config ({e.__class__.__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config must be a mapping of sections (model, data, train)")
    return data


def load_config(path: str | Path | None = None, sets: list[str] | None = None, base: dict | None = None,
                **overrides: Any) -> RunConfig:
    """YAML (optional) → dataclass defaults → `--set` items → flag overrides ("train.seed"=…), checked.

    Args:
        path: a YAML file or a sample config name, or None for the defaults.
        sets: `section.key=value` strings.
        base: a resolved config (a resumed checkpoint's) to start from instead of a YAML file.
        overrides: dotted keys mapped to values; None values are ignored (flag not given).
    """
    if path and base is not None:
        raise ConfigError("give a config file or a resumed run's config, not both (see resume_config)")
    data = load_yaml(path) if path else dict(base or {})
    data = merge(data, parse_set(sets or []))
    for dotted, value in overrides.items():
        if value is not None:
            data = merge(data, _nest(dotted, value))
    return from_dict(data)


# What a checkpoint fixes: its weights and its streams' positions only fit these values.
FIXED_ON_RESUME = ("model.", "data.size", "data.channels", "data.context", "data.stride", "data.batch_size")
# What a run resolves at its start and saves resolved: a config's "auto" there matches its choice.
RESOLVED_AT_START = ("train.channels_last",)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} → {"train.lr": 1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_config(saved: dict, path: str | Path | None = None, sets: list[str] | None = None,
                  **overrides: Any) -> RunConfig:
    """The config of a resumed run: the checkpoint's, with `--set` items and flags applied.

    `path` (the `--config` of the original command, typed again with `--resume` appended) is accepted
    when it resolves, with the same `sets` and flags, to exactly the checkpoint's config.

    Raises:
        ConfigError: `path` resolves to another config; the message lists the keys that differ and
            the `--set` items that would give the run those values.
    """
    cfg = load_config(None, sets, base=saved, **overrides)
    ours, before = flatten(to_dict(cfg)), flatten(to_dict(from_dict(saved)))
    changed = sorted(k for k in ours if k.startswith(FIXED_ON_RESUME) and ours[k] != before.get(k))
    if changed:
        raise ConfigError(f"{', '.join(changed)} cannot change on resume (the checkpoint's weights and streams "
                          "depend on them): start a new run with --out to change them")
    if not path:
        return cfg
    theirs = flatten(to_dict(load_config(path, sets, **overrides)))
    diff = sorted(k for k in ours if ours[k] != theirs.get(k)
                  and not (k in RESOLVED_AT_START and theirs.get(k) == "auto"))
    if not diff:
        return cfg
    shown = ", ".join(f"{k}: run {ours[k]!r}, {Path(str(path)).stem} {theirs[k]!r}" for k in diff[:6])
    more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
    fixed = [k for k in diff if k.startswith(FIXED_ON_RESUME)]
    changeable = [k for k in diff if k not in fixed]
    hint = []
    if changeable:
        sets_hint = " ".join(f"--set {k}={_yaml_value(theirs[k])}" for k in changeable)
        hint.append(f"to resume with {Path(str(path)).stem}'s values add {sets_hint}; to keep the run's, drop --config")
    if fixed:
        hint.append(f"{', '.join(fixed)} cannot change on resume (the checkpoint's weights and streams depend on "
                    "them): start a new run for those")
    raise ConfigError(f"--config {path} differs from the resumed run's config in {len(diff)} key(s) "
                      f"({shown}{more}); {'; '.join(hint)}")


def _yaml_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _nest(dotted: str, value: Any) -> dict:
    out: dict = {}
    node = out
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def detach_schedule(t: TrainConfig) -> list[tuple[int, int]]:
    """`train.detach_schedule` as (first step, chunks per step) pairs, step 0 first (`train.detach_every`).

    Raises:
        ConfigError: not a comma-separated list of N@STEP with N ≥ 1 and increasing steps ≥ 1.
    """
    out = [(0, t.detach_every)]
    for item in filter(None, (x.strip() for x in t.detach_schedule.split(","))):
        every, _, step = item.partition("@")
        try:
            pair = (int(step), int(every))
        except ValueError:
            pair = (0, 0)
        if pair[1] < 1 or pair[0] <= out[-1][0]:
            raise ConfigError(f"config key train.detach_schedule: expected N@STEP items with N >= 1 and increasing "
                              f"steps >= 1, e.g. 2@600,4@900; got {t.detach_schedule!r}")
        out.append(pair)
    return out


def detach_every_at(schedule: list[tuple[int, int]], step: int) -> int:
    """Chunks per optimizer step at `step` (0-based) under a `detach_schedule`."""
    return next(every for first, every in reversed(schedule) if step >= first)


def check(cfg: RunConfig) -> None:
    """Range and consistency checks; the model's input channels follow data.channels."""
    m, d, t = cfg.model, cfg.data, cfg.train
    positive = {
        "data.context": d.context, "data.stride": d.stride, "data.batch_size": d.batch_size,
        "data.prefetch": d.prefetch, "model.horizon": m.horizon, "model.stem_channels": m.stem_channels,
        "model.stem_stride": m.stem_stride, "train.max_steps": t.max_steps, "train.log_every": t.log_every,
        "train.eval_every": t.eval_every, "train.save_every": t.save_every,
        "train.detach_every": t.detach_every, "train.max_bad_steps": t.max_bad_steps,
    }
    for key, v in positive.items():
        if v < 1:
            raise ConfigError(f"config key {key}: must be at least 1, got {v}")
    if d.channels not in (1, 3):
        raise ConfigError(f"config key data.channels: must be 1 (gray) or 3 (RGB), got {d.channels}")
    if not m.hidden_channels or any(c < 1 for c in m.hidden_channels):
        raise ConfigError(f"config key model.hidden_channels: need positive channels, got {list(m.hidden_channels)}")
    try:
        kernels = m.kernels()
    except ValueError as e:
        raise ConfigError(f"config key model.kernel_size: {e}") from None
    for k in kernels:
        if k < 1 or k % 2 == 0:
            raise ConfigError(f"config key model.kernel_size: odd sizes per level needed, got {m.kernel_size}")
    _check_choices(cfg)
    detach_schedule(t)
    if not 0.0 <= t.ema < 1.0:
        raise ConfigError(f"config key train.ema: a decay in [0, 1), got {t.ema}")
    for key, v in (("data.augment.zoom", d.augment.zoom - 1), ("train.patience", t.patience),
                   ("data.augment.flip", d.augment.flip), ("data.augment.reverse", d.augment.reverse),
                   ("data.augment.brightness", d.augment.brightness), ("data.augment.contrast", d.augment.contrast)):
        if v < 0:
            raise ConfigError(f"config key {key}: must not be negative")
    if d.range is not None and not d.range[0] < d.range[1]:
        raise ConfigError(f"config key data.range: [lo, hi] with lo < hi, got {list(d.range)}")
    if not 0.0 < d.val_tail < 1.0:
        raise ConfigError(f"config key data.val_tail: must be in (0, 1), got {d.val_tail}")
    if not 0.0 <= t.hard_pixels <= 1.0 or t.hard_weight < 0:
        raise ConfigError(f"config key train.hard_pixels: a share in [0, 1] (hard_weight >= 0), "
                          f"got {t.hard_pixels} ({t.hard_weight})")
    if not 0.0 <= t.blackout <= 1.0:
        raise ConfigError(f"config key train.blackout: a share in [0, 1], got {t.blackout}")
    if not 0.0 <= t.state_reset <= 1.0:
        raise ConfigError(f"config key train.state_reset: a share in [0, 1], got {t.state_reset}")
    if t.epochs is not None and t.epochs < 1:
        raise ConfigError(f"config key train.epochs: must be at least 1, got {t.epochs}")
    if not 0.0 <= d.val_fraction < 1.0:
        raise ConfigError(f"config key data.val_fraction: must be in [0, 1), got {d.val_fraction}")
    if t.lr <= 0:
        raise ConfigError(f"config key train.lr: must be positive, got {t.lr}")
    h, w = d.hw()
    stride = m.stem_stride * 2 ** (len(m.hidden_channels) - 1)
    if h % stride or w % stride or h < 1 or w < 1:
        raise ConfigError(
            f"config key data.size: {h}×{w} must be divisible by the model's stride {stride} "
            f"(model.stem_stride · 2^(levels-1))"
        )
    m.in_channels = d.channels


CHOICES = {
    "train.loss": LOSSES,
    "train.precision": ("auto", "bf16", "fp32"),
    "train.compile_mode": COMPILE_MODES,
    "train.blackout_region": REGIONS,
    "train.blackout_fill": FILLS,
    "train.state_reset_at": ("step", "chunk"),
    "data.resize": ("crop", "pad", "stretch"),
    "data.val_split": ("auto", "videos", "tail"),
    "data.layout": ("auto", "TNHW", "NTHW", "NTCHW", "NTHWC", "THW", "TCHW", "THWC"),
    "model.output": ("residual", "gated", "flow", "logit"),
}


AUTO_OR_BOOL = ("data.cache", "train.compile", "train.channels_last")  # typed bool | str


def _value(cfg: RunConfig, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _check_choices(cfg: RunConfig) -> None:
    for key, allowed in CHOICES.items():
        value = _value(cfg, key)
        if value not in allowed:
            raise ConfigError(f"config key {key}: one of {', '.join(allowed)}, got {value!r}")
    for key in AUTO_OR_BOOL:
        value = _value(cfg, key)
        if isinstance(value, str) and value != "auto":
            raise ConfigError(f"config key {key}: auto, true or false, got {value!r}")


def dump_yaml(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    atomic.write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
