"""An Oracle over HTTP: the Open Inference Protocol (V2 REST of KServe, Triton, MLServer), counted and budgeted.

The black-box audit asks a deployed model exactly what a user could: ``POST {url}/infer`` with a batch of
inputs, reading back class probabilities. Every input row is counted (the base :class:`Oracle`), requests
are batched, transient failures (connection errors, HTTP 429/502/503/504, timeouts) are retried with
exponential backoff, and an optional rate limit spaces the requests. Only the stdlib is used.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from typing import Any

import torch

from unlearnleak.errors import ConfigError
from unlearnleak.oracle import Oracle

TRANSIENT_STATUS = frozenset({429, 502, 503, 504})


class EndpointError(ConfigError):
    """An endpoint is unreachable, refuses the request, or answers something that is not V2 probabilities."""


class HttpOracle(Oracle):
    """``predict_proba`` through a V2 inference endpoint, e.g. ``http://127.0.0.1:8080/v2/models/original``.

    Args:
        url: the model's V2 address (``.../v2/models/NAME``; a trailing ``/infer`` is accepted).
        num_classes, input_shape, budget: as for every :class:`Oracle` (the budget counts input rows).
        batch_size: rows per request.
        rate_limit: the most requests per second (None: no limit).
        retries: how often a transient failure is retried before giving up.
        backoff: seconds before the first retry, doubled for each further one.
        timeout: seconds to wait for one answer.
        outputs: "probabilities" (checked to be rows summing to 1) or "logits" (softmax applied here).
        flag: the option that named this endpoint, for error messages.
    """

    def __init__(self, url: str, *, num_classes: int, input_shape: tuple[int, ...], budget: int | None = None,
                 batch_size: int = 64, rate_limit: float | None = None, retries: int = 3, backoff: float = 0.2,
                 timeout: float = 30.0, outputs: str = "probabilities", flag: str = "endpoint") -> None:
        super().__init__(num_classes=num_classes, input_shape=input_shape, budget=budget)
        if not url.startswith(("http://", "https://")):
            raise EndpointError(f"{flag} {url!r} is not an http(s) URL; give e.g. http://host:8080/v2/models/NAME")
        if batch_size < 1 or retries < 0 or backoff < 0 or not timeout > 0:
            raise ConfigError(f"invalid HTTP oracle settings: batch_size={batch_size}, retries={retries}, "
                              f"backoff={backoff}, timeout={timeout}")
        if rate_limit is not None and not (math.isfinite(rate_limit) and rate_limit > 0):
            raise ConfigError(f"--rate-limit must be a positive number of requests per second, got {rate_limit}")
        if outputs not in ("probabilities", "logits"):
            raise ConfigError(f"outputs must be 'probabilities' or 'logits', got {outputs!r}")
        base = url.rstrip("/")
        self.url = base[: -len("/infer")] if base.endswith("/infer") else base
        self._batch_size, self._retries, self._backoff, self._timeout = batch_size, retries, backoff, timeout
        self._interval = 0.0 if rate_limit is None else 1.0 / rate_limit
        self._outputs, self._flag = outputs, flag
        self._last_request = -math.inf
        self.requests = 0  # HTTP requests sent (infer calls), retries included

    def check(self) -> dict[str, Any]:
        """GET the model's V2 metadata: fails early (before any query) on a wrong or unreachable URL."""
        answer = self._call("GET", self.url, None)
        if not isinstance(answer, dict):
            raise EndpointError(f"{self._flag} {self.url} answered {type(answer).__name__} instead of V2 model "
                                f"metadata (a JSON object); is this an Open Inference Protocol endpoint?")
        return answer

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self._infer(x[i:i + self._batch_size]) for i in range(0, x.shape[0], self._batch_size)]
        return torch.cat(outs)

    def _infer(self, xb: torch.Tensor) -> torch.Tensor:
        n = int(xb.shape[0])
        payload = {"inputs": [{"name": "input-0", "shape": list(xb.shape), "datatype": "FP32",
                               "data": xb.detach().to("cpu", torch.float32).reshape(-1).tolist()}]}
        answer = self._call("POST", f"{self.url}/infer", payload)
        return self._parse(answer, n)

    def _parse(self, answer: Any, n: int) -> torch.Tensor:
        k = self.num_classes
        where = f"{self._flag} {self.url}"
        try:
            output = answer["outputs"][0]
            shape = [int(v) for v in output["shape"]]
            data = torch.tensor(output["data"], dtype=torch.float64)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise EndpointError(f"{where} answered JSON without a V2 output (outputs[0].shape/.data): "
                                f"{type(exc).__name__} {exc}; is this an Open Inference Protocol endpoint?") from exc
        if shape != [n, k] or data.numel() != n * k:
            raise EndpointError(f"{where} answered shape {shape} with {data.numel()} values for {n} inputs; "
                                f"expected [{n}, {k}] (--num-classes {k})")
        proba = data.reshape(n, k)
        if not bool(torch.isfinite(proba).all()):
            raise EndpointError(f"{where} answered non-finite values")
        if self._outputs == "logits":
            return torch.softmax(proba, dim=1)
        if bool((proba < -1e-6).any()) or bool(((proba.sum(dim=1) - 1).abs() > 1e-3).any()):
            raise EndpointError(f"{where} answered rows that are not probabilities (negative or not summing to 1); "
                                f"if it serves logits, pass --endpoint-outputs logits")
        return proba

    def _call(self, method: str, url: str, payload: Any) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        last = ""
        for attempt in range(self._retries + 1):
            if attempt:
                time.sleep(self._backoff * 2 ** (attempt - 1))
            self._pace()
            request = urllib.request.Request(url, data=body, method=method,
                                             headers={"Content-Type": "application/json"})
            if method == "POST":
                self.requests += 1
            try:
                with urllib.request.urlopen(request, timeout=self._timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:200].decode("utf-8", "replace")
                if exc.code in TRANSIENT_STATUS:
                    last = f"HTTP {exc.code}"
                    continue
                raise EndpointError(f"{self._flag} {url} answered HTTP {exc.code} ({detail.strip() or exc.reason}); "
                                    f"check the URL (expected http://host:port/v2/models/NAME)") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                last = str(getattr(exc, "reason", exc))
                continue
            try:
                return json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise EndpointError(f"{self._flag} {url} answered malformed JSON ({raw[:60]!r}); is this an Open "
                                    f"Inference Protocol endpoint?") from None
        raise EndpointError(f"{self._flag} {url} is unreachable after {self._retries + 1} attempts ({last}); "
                            f"check that the server is running and the URL is right")

    def _pace(self) -> None:
        wait = self._last_request + self._interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last_request = time.monotonic()

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, url={self.url!r}, requests={self.requests})"
