"""convlstm-cli: video next-frame prediction with stateful ConvLSTM encoder-forecasters.

Public API (see README):

    from convlstm_cli import ConvLSTM, EncoderForecaster, StreamState, ClipStreamer
    from convlstm_cli import ConvLSTM2d, Stateful            # nn.LSTM-style ConvLSTM, any RNN kept stateful
    from convlstm_cli import load_model, stream_predict, predict_clip

Importing the package imports torch but not av or torchvision; the video modules load them lazily.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "ConvLSTM": "convlstm_cli.model.convlstm",
    "ConvLSTM2d": "convlstm_cli.model.convlstm2d",
    "Stateful": "convlstm_cli.stateful",
    "EncoderForecaster": "convlstm_cli.model.forecaster",
    "ModelConfig": "convlstm_cli.model.forecaster",
    "StreamState": "convlstm_cli.model.state",
    "ReferenceConvLSTM": "convlstm_cli.model.reference",
    "ClipStreamer": "convlstm_cli.data.streamer",
    "Batch": "convlstm_cli.data.streamer",
    "probe_videos": "convlstm_cli.data.probe",
    "make_dataset": "convlstm_cli.data.synthetic",
    "load_model": "convlstm_cli.checkpoint",
    "stream_predict": "convlstm_cli.predict.streaming",
    "predict_clip": "convlstm_cli.predict.run",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    # Lazy so that `convlstm --help` and `import convlstm_cli` stay light.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'convlstm_cli' has no attribute {name!r}")
