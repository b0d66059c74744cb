"""The OpenAI routes (`/v1/...`, behind the API key) and the operations routes (`/health`,
`/ready`, `/metrics`: no key, no client certificate, as the kubelet probes them)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from r1_runtime.server import generation as generations
from r1_runtime.server.errors import APIError, error_body
from r1_runtime.server.generation import Generation
from r1_runtime.server.model import LoadedModel
from r1_runtime.server.prompts import chat_prompt, completion_prompt, sampling_params
from r1_runtime.server.protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    ModelCard,
    ModelList,
)
from r1_runtime.server.reasoning import TextDelta
from r1_runtime.server.responders import ChatResponder, CompletionResponder, Responder
from r1_runtime.server.review import Review, request_review
from r1_runtime.server.state import ServerState
from r1_runtime.server.streaming import event_stream, usage_of

CLIENT_CERT_STATE = "client_cert_verified"  # set per connection by serve.ClientCertProtocol


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


State = Annotated[ServerState, Depends(server_state)]
Reviewed = Annotated[Review, Depends(request_review)]


async def authorize(request: Request, state: State) -> None:
    """401 unless the request has a valid API key and, under mutual TLS, a verified client
    certificate."""
    if state.config.tls_client_ca and not getattr(request.state, CLIENT_CERT_STATE, False):
        raise APIError(
            401,
            "a client certificate signed by the server's client CA is required",
            code="client_certificate_required",
        )
    if not state.keys.verify(request.headers.get("authorization")):
        raise APIError(
            401,
            "a valid API key is required: Authorization: Bearer KEY",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


openai = APIRouter(prefix="/v1", dependencies=[Depends(authorize)])
operations = APIRouter()


@openai.get("/models")
async def list_models(state: State) -> ModelList:
    model = state.admit()
    name = state.config.served_model_name
    card = ModelCard(id=name, created=model.created, max_model_len=model.max_model_len)
    return ModelList(data=[card])


@openai.post("/chat/completions", response_model=None, responses={200: {"model": ChatCompletion}})
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, state: State, review: Reviewed
) -> Response:
    model = _served(state, body.model, review)
    prompt = chat_prompt(model, body.messages, review.screen)
    is_reasoning = model.think_end_token_id is not None
    responder = ChatResponder(f"chatcmpl-{uuid.uuid4().hex}", body.model, is_reasoning)
    return await _respond(state, review, request, body, model, prompt, responder)


@openai.post("/completions", response_model=None, responses={200: {"model": Completion}})
async def create_completion(
    body: CompletionRequest, request: Request, state: State, review: Reviewed
) -> Response:
    model = _served(state, body.model, review)
    prompt = completion_prompt(model, body.prompt, review.screen if review.needs_prompt else None)
    responder = CompletionResponder(f"cmpl-{uuid.uuid4().hex}", body.model)
    return await _respond(state, review, request, body, model, prompt, responder)


async def _respond(
    state: ServerState,
    review: Review,
    request: Request,
    body: ChatCompletionRequest | CompletionRequest,
    model: LoadedModel,
    prompt: list[int],
    responder: Responder,
) -> Response:
    """Generate, then stream the chunks or answer the whole response."""
    params = sampling_params(model, body, body.output_limit)
    text = review.output_text(model.tokenizer, body.stop_strings, responder.split_reasoning)
    generation = await generations.start(state, prompt, params, text)
    review.request_id, review.generation = responder.request_id, generation
    if body.stream:
        return event_stream(generation, responder, body.include_usage)
    output = await _collect(generation, request)
    return _json(responder.whole(output, generation.finish_reason, usage_of(generation)))


@operations.get("/health")
async def health() -> dict[str, str]:
    """200 while the process is alive: loading, serving or draining."""
    return {"status": "alive"}


@operations.get("/ready", response_model=None)
async def ready(state: State) -> dict[str, str] | JSONResponse:
    """200 once the model is loaded, until a drain begins. Otherwise a 503 whose `status`
    is the phase (`loading`, `building`, `draining`) beside the usual OpenAI error."""
    try:
        state.admit()
    except APIError as error:
        body = {"status": state.phase, "error": error_body(error)}
        return JSONResponse(body, status_code=error.status_code)
    return {"status": "ready"}


@operations.get("/metrics")
async def metrics(state: State) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _served(state: ServerState, name: str, review: Review) -> LoadedModel:
    """The model, if `name` is the one served (noted for the audit either way)."""
    review.model = name
    model = state.admit()
    if name != state.config.served_model_name:
        raise APIError(
            404,
            f"the model {name!r} does not exist; this server serves "
            f"{state.config.served_model_name!r}",
            param="model",
            code="model_not_found",
        )
    return model


async def _collect(generation: Generation, request: Request) -> TextDelta:
    """The whole output of a non-streamed request; aborted if the client disconnects."""
    watcher = asyncio.create_task(_abort_on_disconnect(generation, request))
    reasoning, content = [], []
    try:
        async for delta in generation.deltas():
            reasoning.append(delta.reasoning)
            content.append(delta.content)
    finally:
        watcher.cancel()
    return TextDelta("".join(reasoning), "".join(content))


async def _abort_on_disconnect(generation: Generation, request: Request) -> None:
    # NOTE: the body has been read, so the next ASGI message is the disconnect (if any).
    while (await request.receive())["type"] != "http.disconnect":
        continue
    generation.abort()


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")
