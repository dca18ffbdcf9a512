"""The daemon's HTTP API (FastAPI): KServe v2 / Triton-style health, metadata, inference and repository routes."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import MutableMapping
from dataclasses import replace
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from edge_runtime import __version__
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.serve import codec
from edge_runtime.serve.batcher import Answer, Closed, Overloaded
from edge_runtime.serve.config import ServeConfig
from edge_runtime.serve.metrics import ServeMetrics
from edge_runtime.serve.repository import LoadedModel, ModelRepository

_JSON_TYPES = ("application/json", "")
_NPY_TYPES = ("application/octet-stream", "application/x-npy")
#: JSON bodies at least this large are decoded in a worker thread, so health checks and other requests stay answered
_THREAD_DECODE_BYTES = 64 << 10
#: a request id a client may choose (``X-Request-Id``); anything else gets a fresh one
_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
log = logging.getLogger("edge_runtime.serve")


class ErrorBody(BaseModel):
    error: str
    field: str | None = None
    expected: str | None = None


class SampleOut(BaseModel):
    prediction: int
    label: str | None
    exit_index: int
    output: list[float]
    latency_s: float
    energy_j: float | None
    energy_source: str | None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None
    outputs: list[dict[str, Any]]
    samples: list[SampleOut]
    parameters: dict[str, Any]


_INFER_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {
            "type": "object", "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
                    "type": "object", "required": ["shape", "datatype", "data"],
                    "properties": {"name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                                   "datatype": {"type": "string", "enum": sorted(codec.V2_TO_NUMPY)},
                                   "data": {"type": "array"}}}},
                "parameters": {"type": "object", "properties": {
                    "mode": {"type": "string"}, "policy": {"type": "string"},
                    "thresholds": {"oneOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}}]}}},
            }}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                                "description": "a .npy array (N, ...) in the model's dtype, overrides "
                                                               "as query parameters; or, with an "
                                                               "Inference-Header-Content-Length header, KServe v2 "
                                                               "binary tensor data: that many bytes of JSON (the "
                                                               "input with parameters.binary_data_size), then the "
                                                               "tensor's raw little-endian bytes; "
                                                               "parameters.binary_data_output: true answers in kind"}},
    },
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 408, 413, 415, 422, 500, 503, 504)}


def _error(status: int, message: str, *, field: str | None = None, expected: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    """An error body; never an absolute server path (see :func:`codec.public_message`)."""
    return JSONResponse({"error": codec.public_message(message), "field": field,
                         "expected": None if expected is None else codec.public_message(expected)},
                        status_code=status, headers=headers)


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "-"))


def _json(data: Any, status: int = 200) -> Response:
    return Response(codec.dumps(data), status_code=status, media_type="application/json")


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, at most ``limit`` bytes (413), each piece arriving within ``timeout_s`` (408: a stalled body)."""
    chunks, total = [], 0
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout_s)
        except StopAsyncIteration:
            break
        except (asyncio.TimeoutError, TimeoutError):
            raise codec.RequestError(408, f"request body stalled: nothing arrived for {timeout_s} s", field="body",
                                     expected="the whole body without pauses") from None
        total += len(chunk)
        if total > limit:
            raise codec.RequestError(413, f"request body larger than {limit} bytes", field="body",
                                     expected=f"<= {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _decode(fn: Any, body: bytes, *args: Any) -> Any:
    """``fn(body, *args)`` — decoding a request body — inline when the body is small, in a worker thread when it is
    large (parsing megabytes of JSON would stall the event loop, and with it health checks and every request)."""
    if len(body) < _THREAD_DECODE_BYTES:
        return fn(body, *args)
    return await asyncio.to_thread(fn, body, *args)


def _self_served(body: bytes, rt: Any, ctype: str, params: dict[str, Any]) -> Any:
    return codec.self_served_request(rt, body, ctype, params)


def _answer_body(model: LoadedModel, answer: Answer, req_id: str | None, ov: codec.Overrides,
                 truncated: list[bool] | None = None) -> dict[str, Any]:
    labels = model.runtime.labels
    preds = answer.outputs.argmax(axis=-1)
    samples = []
    for i in range(preds.shape[0]):
        samples.append({
            "prediction": int(preds[i]), "label": labels[int(preds[i])] if labels else None,
            "exit_index": int(answer.exit_index[i]), "output": answer.outputs[i].tolist(),
            "latency_s": float(answer.latency_s[i]),
            "energy_j": None if answer.energy_j is None else float(answer.energy_j[i]),
            "energy_source": answer.energy_source if answer.energy_j is not None else None,
            **({"truncated": truncated[i]} if truncated is not None else {}),
        })
    n = len(samples)
    return {
        "model_name": model.name, "model_version": model.version, "id": req_id,
        "outputs": [
            {"name": "output", "shape": list(answer.outputs.shape), "datatype": "FP32",
             "data": answer.outputs.reshape(-1).tolist()},
            {"name": "prediction", "shape": [n], "datatype": "INT64", "data": preds.tolist()},
            {"name": "exit_index", "shape": [n], "datatype": "INT64", "data": answer.exit_index.tolist()},
        ],
        "samples": samples,
        "parameters": {"mode": ov.mode, "policy": ov.policy, "thresholds": ov.thresholds,
                       "batch_size": answer.batch_size, "queue_s": answer.queue_s},
    }


def _binary_answer(model: LoadedModel, answer: Answer, req_id: str | None, ov: codec.Overrides) -> Response:
    """The answer in the binary tensor data extension: a JSON header (outputs with ``binary_data_size``, no per-sample
    records) followed by the output, prediction and exit-index tensors' raw bytes."""
    preds = answer.outputs.argmax(axis=-1)
    tensors = [answer.outputs.astype(np.float32, copy=False), preds.astype(np.int64), answer.exit_index]
    doc = {"model_name": model.name, "model_version": model.version, "id": req_id,
           "outputs": [{"name": "output", "shape": list(answer.outputs.shape), "datatype": "FP32"},
                       {"name": "prediction", "shape": [len(preds)], "datatype": "INT64"},
                       {"name": "exit_index", "shape": [len(preds)], "datatype": "INT64"}],
           "parameters": {"mode": ov.mode, "policy": ov.policy, "thresholds": ov.thresholds,
                          "batch_size": answer.batch_size, "queue_s": answer.queue_s}}
    body, header = codec.encode_binary(doc, tensors)
    return Response(body, media_type="application/octet-stream", headers={codec.BINARY_HEADER: str(header)})


def create_app(repo: ModelRepository, config: ServeConfig, metrics: ServeMetrics) -> FastAPI:
    """The ASGI app over a loaded :class:`ModelRepository`.

    Example:
        >>> app = create_app(repo, ServeConfig(), metrics)          # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8080)           # doctest: +SKIP
    """
    app = FastAPI(title="edge-runtime", version=__version__, docs_url=None, redoc_url=None,  # no CDN-loaded UIs
                  description="Early-exit inference daemon (KServe v2 / Triton-style API).")
    app.state.draining = False

    def unknown_model(name: str) -> Response:
        return _error(404, f"unknown model {name!r}", field="name", expected=", ".join(repo.names()))

    @app.get("/v2/health/live", tags=["health"])
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["health"], responses={503: {"model": ErrorBody}})
    async def ready() -> Response:
        if app.state.draining:
            return _error(503, "draining: the daemon is shutting down")
        if not repo.ready:
            return _error(503, "not every model is loaded")
        return _json({"ready": True})

    @app.get("/v2", tags=["metadata"])
    async def server_metadata() -> dict[str, Any]:
        return {"name": "edge-runtime", "version": __version__, "extensions": ["model_repository", "early_exit"]}

    @app.get("/v2/models/{name}", tags=["metadata"], responses={404: {"model": ErrorBody}})
    async def model_metadata(name: str) -> Response:
        try:
            m = repo.get(name)
        except KeyError:
            return unknown_model(name)
        point = m.adaptive.state() if m.adaptive is not None else {
            "adaptive": False, "index": -1, "thresholds": list(m.runtime.default_policy.thresholds),
            "mode": m.runtime.default_mode}
        return _json(codec.metadata(m.runtime, m.version) | {"name": name, "generation": m.generation,
                                                             "operating_point": point})

    @app.get("/v2/models/{name}/ready", tags=["health"], responses={404: {"model": ErrorBody}})
    async def model_ready(name: str) -> Response:
        try:
            m = repo.get(name)
        except KeyError:
            return unknown_model(name)
        return _json({"name": name, "ready": m.batcher.alive and not app.state.draining})

    @app.post("/v2/models/{name}/infer", tags=["inference"], response_model=None,
              responses={200: {"model": InferResponse}, **_ERRORS}, openapi_extra={"requestBody": _INFER_BODY})
    async def infer(name: str, request: Request) -> Response:
        try:
            model = repo.get(name)
        except KeyError:
            return unknown_model(name)
        status = "200"
        rid = _request_id(request)
        data_field = "inputs[0].data"
        try:
            body = await _read_body(request, config.max_body_bytes, config.body_timeout_s)
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            params: dict[str, Any] = dict(request.query_params)
            own = await _decode(_self_served, body, model.runtime, ctype, params)
            if own is not None:  # a mode that answers whole requests itself (e.g. a generative mode)
                mode, doc = own
                status = "200"
                try:
                    out = await asyncio.wait_for(asyncio.to_thread(codec.serve_with_mode, mode, model.runtime, doc),
                                                 config.timeout_s)
                except (asyncio.TimeoutError, TimeoutError):
                    status = "504"
                    log.warning("request %s: no answer within %s s (mode %s)", rid, config.timeout_s, mode.name)
                    return _error(504, f"no answer within {config.timeout_s} s",
                                  expected="retry later or raise --timeout")
                return _json({"model_name": model.name, "model_version": model.version, **out})
            binary_length = request.headers.get(codec.BINARY_HEADER)
            binary_out = False
            for attempt in range(2):  # a reload between decoding and queueing: decode again for the new model
                rt = model.runtime
                raw = codec.wants_preprocess(params, "query.")
                if binary_length is not None:  # KServe v2 binary tensor data extension: JSON header + raw bytes
                    breq = codec.decode_binary(body, binary_length, rt, config.max_queue, raw)
                    x, req_id, binary_out = breq.x, breq.req_id, breq.binary_output
                    prefix, data_field = ("parameters." if breq.params else "query."), "body"
                    params = {**params, **breq.params}
                elif ctype in _NPY_TYPES:
                    x, req_id = await _decode(codec.decode_npy, body, rt, config.max_queue, raw), None
                    prefix, data_field = "query.", "body"
                elif ctype in _JSON_TYPES:
                    x, body_params, req_id = await _decode(codec.decode_json, body, rt, config.max_queue, raw)
                    prefix = "parameters." if body_params else "query."
                    params = {**params, **body_params}
                else:
                    raise codec.RequestError(415, f"unsupported content type {ctype!r}", field="Content-Type",
                                             expected="application/json, application/octet-stream (.npy), or "
                                                      f"a {codec.BINARY_HEADER} header (binary tensor data)")
                ov = codec.parse_overrides(params, prefix)
                chosen = model.adaptive.current() if model.adaptive is not None and ov == codec.Overrides() else None
                if chosen is not None:  # no policy of its own: the SLO controller's operating point
                    ov = replace(ov, mode="early_exit")
                else:
                    ov = replace(ov, mode=rt.resolve_mode(ov.mode, ov.policy is not None or ov.thresholds is not None))
                key, policy = chosen if chosen is not None else (ov.key, model.policies.get(ov.key))
                if policy is None:
                    policy = codec.make_policy(rt, ov, prefix)
                    if len(model.policies) < 64:  # bounded: arbitrary thresholds must not grow memory
                        model.policies[ov.key] = policy
                try:
                    req = model.batcher.submit(x, key=key, mode=ov.mode or rt.default_mode, policy=policy)
                    break
                except Closed:
                    if attempt or app.state.draining:
                        raise
                    model = repo.get(name)
            try:
                answer: Answer = await asyncio.wait_for(req.future, config.timeout_s)
            except (asyncio.TimeoutError, TimeoutError):
                model.batcher.cancel(req)
                status = "504"
                log.warning("request %s: no answer within %s s", rid, config.timeout_s)
                return _error(504, f"no answer within {config.timeout_s} s", field=None,
                              expected="retry later or raise --timeout")
            bad = ~np.isfinite(answer.outputs.reshape(answer.outputs.shape[0], -1)).all(axis=1)
            if bad.any():
                raise codec.RequestError(
                    422, f"the model's output is not finite for sample(s) {np.flatnonzero(bad)[:10].tolist()}: the "
                    "input is outside the range the model computes in", field=data_field,
                    expected="inputs in the range the model was trained on")
            metrics.infer_latency.labels(name).observe(float(answer.latency_s.max()))
            if binary_out:
                return _binary_answer(model, answer, req_id, ov)
            return _json(_answer_body(model, answer, req_id, ov, codec.text_truncated(model.runtime, x)))
        except codec.RequestError as exc:
            status = str(exc.status)
            headers = {"Connection": "close"} if exc.status == 408 else None
            return JSONResponse(exc.body(), status_code=exc.status, headers=headers)
        except Overloaded as exc:
            status = "503"
            log.warning("request %s: overloaded (%s)", rid, exc)
            return _error(503, f"overloaded: {exc}", expected="retry after the Retry-After delay",
                          headers={"Retry-After": str(config.retry_after_s)})
        except Closed as exc:
            status = "503"
            log.warning("request %s: %s", rid, exc)
            return _error(503, str(exc), headers={"Retry-After": str(config.retry_after_s)})
        except Exception as exc:  # noqa: BLE001 - a backend failure inside the batch: answer, do not crash
            status = "500"
            log.error("request %s to model %r: inference failed: %s: %s", rid, name, type(exc).__name__, exc,
                      exc_info=not isinstance(exc, EdgeRuntimeError))
            return _error(500, f"inference failed (request id {rid}); the server log has the details")
        finally:
            metrics.infer_requests.labels(name, status).inc()
            metrics.queue.labels(name).set(model.batcher.queued_samples)

    @app.post("/v2/repository/models/{name}/load", tags=["repository"], responses={404: {"model": ErrorBody},
                                                                                   422: {"model": ErrorBody}})
    async def load(name: str) -> Response:
        if name not in repo.names():
            return unknown_model(name)
        try:
            m = await asyncio.to_thread(repo.load, name)
        except EdgeRuntimeError as exc:
            old = repo.get(name)
            return JSONResponse({"error": codec.public_message(f"load failed; still serving version {old.version}: "
                                                               f"{exc}"),
                                 "field": getattr(exc, "field", None), "expected": "a bundle that passes verification",
                                 "serving": old.version}, status_code=422)
        return _json({"name": name, "version": m.version, "generation": m.generation, "path": str(m.path)})

    @app.post("/v2/repository/index", tags=["repository"])
    async def index() -> list[dict[str, Any]]:
        out = []
        for name in repo.names():
            try:
                m = repo.get(name)
                out.append({"name": name, "version": m.version, "state": "READY", "generation": m.generation,
                            "reason": repo.last_error[name] or ""})
            except KeyError:
                out.append({"name": name, "version": None, "state": "UNAVAILABLE",
                            "reason": repo.last_error[name] or ""})
        return out

    @app.get("/metrics", tags=["metrics"])
    async def prometheus() -> Response:
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    app.add_middleware(_Guard, config=config, metrics=metrics)
    return app


class _Guard:
    """Pure-ASGI outer layer: a request id (``X-Request-Id``, in every response and in the log lines of 5xx
    answers), bearer-token auth, Content-Length limit, per-route request metrics."""

    _OPEN = ("/v2/health/",)

    def __init__(self, app: Any, *, config: ServeConfig, metrics: ServeMetrics) -> None:
        self.app, self.config, self.metrics = app, config, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        seen = {"status": 500}
        headers = dict(scope.get("headers") or [])
        asked = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = asked if _CLIENT_ID.fullmatch(asked) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        path = scope.get("path", "")
        if self.config.token is not None and not path.startswith(self._OPEN):
            auth = headers.get(b"authorization", b"").decode("latin-1")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not self.config.token_matches(token.strip()):
                response = _error(401, "missing or wrong bearer token", field="Authorization",
                                  expected="Authorization: Bearer <token>", headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send_wrapper)
                self._count(scope, seen["status"], start)
                return
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.config.max_body_bytes):
            response = _error(413, f"request body larger than {self.config.max_body_bytes} bytes", field="body",
                              expected=f"<= {self.config.max_body_bytes} bytes")
            await response(scope, receive, send_wrapper)
            self._count(scope, seen["status"], start)
            return
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self._count(scope, seen["status"], start)

    def _count(self, scope: dict, status: int, start: float) -> None:
        route = scope.get("route")
        label = getattr(route, "path", None) or "unmatched"
        self.metrics.http_requests.labels(label, str(status)).inc()
        self.metrics.http_latency.labels(label).observe(time.perf_counter() - start)
