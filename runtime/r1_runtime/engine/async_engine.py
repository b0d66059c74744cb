"""The engine loop in its own thread, streaming each request's tokens to asyncio consumers.

Only the engine thread touches the `LLMEngine` (and so torch and the scheduler). Other threads
post commands to it through a queue; it answers through each request's `asyncio.Queue`, on
the event loop that submitted the request, one batch of deliveries per loop per step.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import threading
from collections import defaultdict
from dataclasses import dataclass

from r1_runtime.engine.batch import SequenceOutput
from r1_runtime.engine.llm_engine import InvalidRequestError, LLMEngine, QueueFullError
from r1_runtime.engine.sequence import FinishReason, SamplingParams
from r1_runtime.engine.stats import EngineStats

logger = logging.getLogger(__name__)

IDLE_SECONDS = 5.0  # with nothing to run, `LLMEngine.idle` this often


class EngineDeadError(RuntimeError):
    """The engine loop has stopped (shut down, or a step failed); no request can run."""


@dataclass(frozen=True)
class StreamOutput:
    """New tokens of one request; `finish_reason` is set on the last one."""

    token_ids: list[int]
    finish_reason: FinishReason | None = None
    queue_seconds: float | None = None  # on the first output: time spent waiting to be scheduled


class RequestHandle:
    """One request's stream: `async for output in handle` yields `StreamOutput`s until the one
    with a finish reason. Iteration raises `QueueFullError` or `InvalidRequestError` (e.g.
    `PromptTooLongError`) when the engine refused the request, `EngineDeadError` when the
    engine stopped under it."""

    def __init__(self, request_id: str, engine: AsyncEngine) -> None:
        self.request_id = request_id
        self._engine = engine
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[StreamOutput | BaseException] = asyncio.Queue()
        self.finish_reason: FinishReason | None = None

    def abort(self) -> None:
        """Stop generating (e.g. the client went away); the stream ends with `ABORT`."""
        self._engine.abort(self.request_id)

    def __aiter__(self) -> RequestHandle:
        return self

    async def __anext__(self) -> StreamOutput:
        if self.finish_reason is not None:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, BaseException):
            self.finish_reason = FinishReason.ABORT
            raise item
        self.finish_reason = item.finish_reason
        return item


@dataclass(frozen=True)
class _Add:
    handle: RequestHandle
    prompt_token_ids: list[int]
    params: SamplingParams | None


@dataclass(frozen=True)
class _Abort:
    request_id: str


class _Stop:
    pass


Delivery = tuple[RequestHandle, StreamOutput | BaseException]


class AsyncEngine:
    """Owns an `LLMEngine` and the thread that steps it. `submit` from a running event loop;
    `abort` and `shutdown` from any thread."""

    def __init__(self, engine: LLMEngine) -> None:
        self._engine = engine
        self._commands: queue.SimpleQueue[_Add | _Abort | _Stop] = queue.SimpleQueue()
        self._requests: dict[str, RequestHandle] = {}
        self._request_ids = itertools.count()
        self._stopped = threading.Event()
        self.failure: BaseException | None = None  # why the loop stopped, when a step failed
        self._submit_lock = threading.Lock()  # NOTE: no add is queued once the loop has stopped
        self._thread = threading.Thread(target=self._run, name="r1-engine", daemon=True)
        self._thread.start()

    @property
    def engine(self) -> LLMEngine:
        """The engine, for reading its state in tests once it is idle; not for calling."""
        return self._engine

    @property
    def stats(self) -> EngineStats:
        """The engine's latest published stats. NOTE: read from any thread: the engine thread
        replaces the frozen snapshot in one attribute store, atomic under the GIL."""
        return self._engine.stats

    def check_prompt(self, prompt_token_ids: list[int]) -> None:
        """`LLMEngine.check_prompt`, from any thread (it reads only what never changes): to
        refuse a prompt before submitting it."""
        self._engine.check_prompt(prompt_token_ids)

    def submit(
        self, prompt_token_ids: list[int], params: SamplingParams | None = None
    ) -> RequestHandle:
        """Queue a request; its tokens stream through the returned handle. Call from a
        coroutine: the handle belongs to the running event loop."""
        handle = RequestHandle(f"req-{next(self._request_ids)}", self)
        with self._submit_lock:
            if self._stopped.is_set():
                raise EngineDeadError("the engine loop has stopped")
            self._commands.put(_Add(handle, list(prompt_token_ids), params))
        return handle

    def abort(self, request_id: str) -> None:
        """Finish a request and free its KV blocks, from any thread; unknown ids are ignored."""
        self._commands.put(_Abort(request_id))

    def shutdown(self, timeout: float | None = 30.0) -> None:
        """Stop the loop after the current step; unfinished requests end with `ABORT`."""
        self._commands.put(_Stop())
        self._thread.join(timeout)

    def _run(self) -> None:
        ending: StreamOutput | BaseException = StreamOutput([], FinishReason.ABORT)
        try:
            while self._apply_commands(block=not self._engine.has_unfinished):
                if self._engine.has_unfinished:
                    self._deliver(self._outputs(self._engine.step()))
        except Exception as error:
            logger.exception("engine step failed; failing every request")
            self.failure = error
            ending = EngineDeadError(f"engine step failed: {error}")
        with self._submit_lock:
            self._stopped.set()
        self._deliver([(handle, ending) for handle in self._requests.values()])
        self._deliver(
            [
                (handle, EngineDeadError("the engine loop has stopped"))
                for handle in self._unapplied_adds()
            ]
        )

    def _unapplied_adds(self) -> list[RequestHandle]:
        """Handles of requests submitted but never applied (the loop stopped first)."""
        handles = []
        with contextlib.suppress(queue.Empty):
            while True:
                command = self._commands.get_nowait()
                if isinstance(command, _Add):
                    handles.append(command.handle)
        return handles

    def _apply_commands(self, *, block: bool) -> bool:
        """Apply queued commands (waiting for one if `block`, `LLMEngine.idle` every
        `IDLE_SECONDS` meanwhile); False once told to stop."""
        try:
            command = self._next_command(block)
            while True:
                if isinstance(command, _Stop):
                    return False
                self._apply(command)
                command = self._commands.get_nowait()
        except queue.Empty:
            return True

    def _next_command(self, block: bool) -> _Add | _Abort | _Stop:
        while block:
            try:
                return self._commands.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                self._engine.idle()
        return self._commands.get_nowait()

    def _apply(self, command: _Add | _Abort) -> None:
        if isinstance(command, _Abort):
            handle = self._requests.get(command.request_id)
            if handle is not None and self._engine.abort(command.request_id):
                self._deliver([(handle, StreamOutput([], FinishReason.ABORT))])
            return
        handle = command.handle
        try:
            self._engine.add_request(command.prompt_token_ids, command.params, handle.request_id)
        except (QueueFullError, InvalidRequestError) as error:
            self._deliver([(handle, error)])
        else:
            self._requests[handle.request_id] = handle

    def _outputs(self, outputs: list[SequenceOutput]) -> list[Delivery]:
        deliveries: list[Delivery] = []
        for output in outputs:
            handle = self._requests[output.seq_id]
            item = StreamOutput(output.new_token_ids, output.finish_reason, output.queue_seconds)
            deliveries.append((handle, item))
        return deliveries

    def _deliver(self, deliveries: list[Delivery]) -> None:
        """Hand items to their event loops (one call per loop); forget finished requests."""
        by_loop: defaultdict[asyncio.AbstractEventLoop, list[Delivery]] = defaultdict(list)
        for handle, item in deliveries:
            by_loop[handle._loop].append((handle, item))
            if isinstance(item, BaseException) or item.finish_reason is not None:
                self._requests.pop(handle.request_id, None)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening
                loop.call_soon_threadsafe(_put_all, items)


def _put_all(deliveries: list[Delivery]) -> None:
    for handle, item in deliveries:
        handle._queue.put_nowait(item)
