"""`convlstm predict`: a trained model on one clip, beside the truth and the copy-last baseline.

- `run`: `predict_clip`, its plan (`PredictPlan`) and result (`PredictResult`);
- `streaming`: `stream_predict` (frames → per-frame forecasts, state carried, constant memory) and
  `encode_context`;
- `outputs`: the clip going in (`open_clip`) and the files coming out (`PredictionOutputs`);
- `render`: labelled truth | prediction | error panels and the forecast strip.
"""

from __future__ import annotations

from convlstm_cli.predict.run import PredictPlan, PredictResult, predict_clip
from convlstm_cli.predict.streaming import StreamChunk, encode_context, stream_predict

__all__ = ["PredictPlan", "PredictResult", "StreamChunk", "encode_context", "predict_clip", "stream_predict"]
