"""A small MLServer runtime serving one model of an unlearnleak pair folder (safetensors, nothing unpickled)."""

from __future__ import annotations

from pathlib import Path

import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

from unlearnleak.pair import ModelPair


class PairRuntime(MLModel):
    """Answers V2 infer requests with softmax probabilities of θ or θ_u; logs ``name:rows`` per request."""

    async def load(self) -> bool:
        torch.set_num_threads(1)
        params = self.settings.parameters
        assert params is not None and params.uri is not None and params.extra is not None
        self._model = ModelPair.load(params.uri).model(params.extra["which"])
        self._log = Path(params.extra["log"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = torch.as_tensor(NumpyCodec.decode_input(payload.inputs[0]), dtype=torch.float32)
        with torch.no_grad():
            p = torch.softmax(self._model(x).double(), dim=1).numpy()
        with self._log.open("a") as f:
            f.write(f"{self.name}:{x.shape[0]}\n")
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("probabilities", p)])
