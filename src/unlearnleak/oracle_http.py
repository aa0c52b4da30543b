"""An Oracle over HTTP: the Open Inference Protocol (V2 REST of KServe, Triton, MLServer), counted and budgeted.

The black-box audit asks a deployed model exactly what a user could: ``POST {url}/infer`` with a batch of
inputs, reading back class probabilities. Every input row is counted (the base :class:`Oracle`), requests
are batched, and an optional rate limit spaces them. The transport is :class:`unlearnleak.safe_http.SafeHttp`:
no redirects unless same-origin ones are asked for, a size cap on every answer, a deadline on every request
(and optionally on the whole command), transient failures retried with backoff; answers are parsed with
limits on nesting and number length and checked to be finite probabilities of the declared shape.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from unlearnleak.errors import ConfigError
from unlearnleak.oracle import Oracle
from unlearnleak.safe_http import Deadline, HttpError, Limits, Redirects, SafeHttp, parse_json

MIN_RATE_LIMIT = 0.01  # requests per second: one request every 100 s at the slowest
METADATA_MAX_BYTES = 1 << 20  # V2 model metadata is a few hundred bytes
ANSWER_OVERHEAD_BYTES = 64 << 10  # names, shapes and other outputs beside the probabilities
BYTES_PER_VALUE = 64  # a JSON number (at most 40 characters) with its separator, generously

_HINTS = {
    "url": "give e.g. http://host:8080/v2/models/NAME",
    "unreachable": "check that the server is running and the URL is right",
    "status": "check the URL (expected http://host:port/v2/models/NAME)",
    "redirect": "give the URL the server redirects to, or pass --redirects same-origin",
    "timeout": "raise --endpoint-timeout if the server is just slow",
    "deadline": "raise --endpoint-deadline, or lower --per-class or --budget",
    "too-large": "is this an Open Inference Protocol endpoint with --num-classes classes?",
    "malformed": "is this an Open Inference Protocol endpoint?",
}


class EndpointError(ConfigError):
    """An endpoint is unreachable, refuses the request, or answers something that is not V2 probabilities."""


def endpoint_error(exc: HttpError) -> EndpointError:
    """``exc`` as an EndpointError with the hint for its kind."""
    hint = _HINTS.get(exc.kind)
    return EndpointError(f"{exc}; {hint}" if hint else str(exc))


class HttpOracle(Oracle):
    """``predict_proba`` through a V2 inference endpoint, e.g. ``http://127.0.0.1:8080/v2/models/original``.

    Args:
        url: the model's V2 address (``.../v2/models/NAME``; a trailing ``/infer`` is accepted).
        num_classes, input_shape, budget: as for every :class:`Oracle` (the budget counts input rows).
        batch_size: rows per request.
        rate_limit: the most requests per second (None: no limit; at least 0.01, one every 100 s).
        retries: how often a transient failure is retried before giving up.
        backoff: seconds before the first retry, doubled for each further one.
        timeout: seconds for one request, from connecting to the last byte, retries included.
        outputs: "probabilities" (checked to be rows summing to 1) or "logits" (softmax applied here).
        flag: the option that named this endpoint, for error messages.
        deadline: the command's deadline, shared by its endpoints (None: only the per-request timeout).
        redirects: "none" (default) or "same-origin".
    """

    def __init__(self, url: str, *, num_classes: int, input_shape: tuple[int, ...], budget: int | None = None,
                 batch_size: int = 64, rate_limit: float | None = None, retries: int = 3, backoff: float = 0.2,
                 timeout: float = 60.0, outputs: str = "probabilities", flag: str = "endpoint",
                 deadline: Deadline | None = None, redirects: Redirects = "none") -> None:
        super().__init__(num_classes=num_classes, input_shape=input_shape, budget=budget)
        if batch_size < 1 or retries < 0 or not (math.isfinite(backoff) and backoff >= 0) \
                or not (math.isfinite(timeout) and timeout > 0):
            raise ConfigError(f"invalid HTTP oracle settings: batch_size={batch_size}, retries={retries}, "
                              f"backoff={backoff}, timeout={timeout}")
        check_rate_limit(rate_limit)
        if outputs not in ("probabilities", "logits"):
            raise ConfigError(f"outputs must be 'probabilities' or 'logits', got {outputs!r}")
        base = url.rstrip("/") if isinstance(url, str) else url
        base = base[: -len("/infer")] if isinstance(base, str) and base.endswith("/infer") else base
        limits = Limits(connect_timeout=min(10.0, timeout), read_timeout=min(30.0, timeout), request_timeout=timeout,
                        max_bytes=METADATA_MAX_BYTES, retries=retries, backoff=backoff, redirects=redirects)
        try:
            self._http = SafeHttp(base, what=flag, limits=limits, deadline=deadline,
                                  user_agent="unlearnleak-audit")
        except HttpError as exc:
            raise endpoint_error(exc) from None
        self.url = self._http.url
        self._batch_size = batch_size
        self._interval = 0.0 if rate_limit is None else 1.0 / rate_limit
        self._rate_limit = rate_limit
        self._outputs, self._flag = outputs, flag
        self._deadline = deadline
        self._last_request = -math.inf

    @property
    def requests(self) -> int:
        """HTTP infer requests sent (POSTs, retries included)."""
        return self._http.sent["POST"]

    def check(self) -> dict[str, Any]:
        """GET the model's V2 metadata: fails early (before any query) on a wrong or unreachable URL."""
        answer = self._call("GET", self.url, None, METADATA_MAX_BYTES)
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
        limit = ANSWER_OVERHEAD_BYTES + BYTES_PER_VALUE * n * self.num_classes
        answer = self._call("POST", f"{self.url}/infer", payload, limit)
        return self._parse(answer, n)

    def _parse(self, answer: Any, n: int) -> torch.Tensor:
        k = self.num_classes
        where = f"{self._flag} {self.url}"
        output = None
        if isinstance(answer, dict) and isinstance(answer.get("outputs"), list) and answer["outputs"]:
            output = answer["outputs"][0]
        shape = output.get("shape") if isinstance(output, dict) else None
        data = output.get("data") if isinstance(output, dict) else None
        if not (isinstance(shape, list) and all(_is_int(v) for v in shape) and isinstance(data, list)):
            raise EndpointError(f"{where} answered JSON without a V2 output (outputs[0].shape as integers and "
                                f"outputs[0].data as a list); is this an Open Inference Protocol endpoint?")
        if shape != [n, k] or len(data) != n * k:
            raise EndpointError(f"{where} answered shape {str(shape)[:60]} with {len(data)} values for {n} inputs; "
                                f"expected [{n}, {k}] (--num-classes {k})")
        if not all(_is_number(v) for v in data):
            bad = next(v for v in data if not _is_number(v))
            raise EndpointError(f"{where} answered a non-number in outputs[0].data: {str(bad)[:40]!r}")
        proba = torch.tensor(data, dtype=torch.float64).reshape(n, k)
        if not bool(torch.isfinite(proba).all()):
            raise EndpointError(f"{where} answered non-finite values")
        if self._outputs == "logits":
            return torch.softmax(proba, dim=1)
        if bool((proba < -1e-6).any()) or bool(((proba.sum(dim=1) - 1).abs() > 1e-3).any()):
            raise EndpointError(f"{where} answered rows that are not probabilities (negative or not summing to 1); "
                                f"if it serves logits, pass --endpoint-outputs logits")
        return proba

    def _call(self, method: str, url: str, payload: Any, max_bytes: int) -> Any:
        self._pace()
        try:
            if method == "POST":
                response = self._http.post_json(url, payload, max_bytes=max_bytes)
            else:
                response = self._http.get(url, max_bytes=max_bytes)
            return parse_json(response.body, f"{self._flag} {url}")
        except HttpError as exc:
            raise endpoint_error(exc) from None

    def _pace(self) -> None:
        wait = self._last_request + self._interval - time.monotonic()
        if wait > 0:
            if self._deadline is not None and wait >= self._deadline.remaining():
                raise EndpointError(f"{self._flag}: the next request, spaced by --rate-limit {self._rate_limit:g}/s, "
                                    f"would start after the deadline ({self._deadline.what}); raise one of them")
            time.sleep(wait)
        self._last_request = time.monotonic()

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, url={self.url!r}, requests={self.requests})"


def check_rate_limit(rate_limit: float | None) -> None:
    """A rate limit is None or a finite number of requests per second, at least MIN_RATE_LIMIT."""
    if rate_limit is not None and not (math.isfinite(rate_limit) and rate_limit >= MIN_RATE_LIMIT):
        raise ConfigError(f"--rate-limit must be a finite number of requests per second >= {MIN_RATE_LIMIT:g} "
                          f"(one request every {1 / MIN_RATE_LIMIT:g} s at the slowest), got {rate_limit}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
