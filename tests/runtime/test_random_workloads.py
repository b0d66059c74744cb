"""Random workloads always drain: every request ends with the tokens a lone run would give,
streamed once each, and every block comes back. `factories.step` checks each step's limits
and block accounting (reference counts match the block tables, never negative)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from r1_runtime.engine import FinishReason, SamplingParams, Scheduler, Sequence

from .factories import EOS, make_config, step

pytestmark = pytest.mark.slow

MAX_STEPS = 3000


@dataclass
class Request:
    seq: Sequence
    arrival_step: int
    abort_step: int | None
    sampled: list[int]  # the model's answer for each output position

    @property
    def expected_output(self) -> list[int]:
        """What a lone run gives: the sampled ids up to EOS (unless ignored) or max_tokens."""
        if not self.seq.params.ignore_eos and EOS in self.sampled:
            return self.sampled[: self.sampled.index(EOS) + 1]
        return self.sampled

    @property
    def expected_reason(self) -> FinishReason:
        if not self.seq.params.ignore_eos and EOS in self.sampled:
            return FinishReason.STOP
        return FinishReason.LENGTH


@st.composite
def schedulers(draw: st.DrawFn) -> Scheduler:
    max_num_seqs = draw(st.integers(1, 6))
    config = make_config(
        num_blocks=draw(st.integers(2, 16)),
        block_size=draw(st.sampled_from([1, 2, 4])),
        max_num_seqs=max_num_seqs,
        max_batch_tokens=draw(st.integers(max_num_seqs, 24)),
        max_waiting=draw(st.integers(1, 8)),
        prefill_chunk_size=draw(st.none() | st.integers(1, 8)),
    )
    return Scheduler(config)


@st.composite
def requests(draw: st.DrawFn) -> list[Request]:
    # A few shared prefixes over a tiny vocabulary, so prefixes repeat and the cache hits.
    prefixes = draw(st.lists(st.lists(st.integers(0, 3), max_size=12), min_size=1, max_size=3))
    result = []
    for index in range(draw(st.integers(1, 12))):
        prompt = draw(st.sampled_from(prefixes)) + draw(
            st.lists(st.integers(0, 3), min_size=1, max_size=20)
        )
        max_tokens = draw(st.integers(1, 10))
        params = SamplingParams(max_tokens=max_tokens, ignore_eos=draw(st.booleans()))
        result.append(
            Request(
                seq=Sequence(f"req-{index}", prompt, params),
                arrival_step=draw(st.integers(0, 15)),
                abort_step=draw(st.none() | st.integers(0, 40)),
                sampled=draw(st.lists(st.integers(0, 5), min_size=max_tokens, max_size=max_tokens)),
            )
        )
    return sorted(result, key=lambda request: request.arrival_step)


def run(scheduler: Scheduler, workload: list[Request]) -> tuple[dict[str, list[int]], set[str]]:
    """Feed arrivals (retrying refused ones) and aborts; return streamed tokens and aborted ids."""
    by_id = {request.seq.seq_id: request for request in workload}
    pending = list(workload)
    streamed: dict[str, list[int]] = {request.seq.seq_id: [] for request in workload}
    aborted = set()
    for step_no in range(MAX_STEPS):
        while pending and pending[0].arrival_step <= step_no:
            if not scheduler.try_add(pending[0].seq):
                break  # the queue is full: the client retries later
            pending.pop(0)
        for request in workload:
            if request.abort_step == step_no and scheduler.abort(request.seq.seq_id):
                aborted.add(request.seq.seq_id)
        if not pending and scheduler.is_idle:
            return streamed, aborted
        was_idle = scheduler.is_idle
        batch, outputs = step(
            scheduler, lambda seq: by_id[seq.seq_id].sampled[seq.num_output_tokens]
        )
        assert batch is not None or was_idle, "unfinished sequences but nothing scheduled"
        for output in outputs:
            streamed[output.seq_id] += output.new_token_ids
    raise AssertionError(f"not drained after {MAX_STEPS} steps")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scheduler=schedulers(), workload=requests())
def test_random_workloads_drain_with_lone_run_outputs_and_no_block_leak(
    scheduler: Scheduler, workload: list[Request]
) -> None:
    streamed, aborted = run(scheduler, workload)
    blocks = scheduler.block_manager
    assert blocks.num_free_blocks == blocks.num_blocks
    assert all(blocks.ref_count(block_id) == 0 for block_id in range(blocks.num_blocks))
    for request in workload:
        seq, expected = request.seq, request.expected_output
        assert seq.is_finished and seq.block_table == []
        assert streamed[seq.seq_id] == seq.output_token_ids
        assert expected[: seq.num_output_tokens] == seq.output_token_ids
        fits = blocks.num_blocks_for(seq.num_prompt_tokens + len(expected) - 1) <= blocks.num_blocks
        if seq.seq_id in aborted:
            assert seq.finish_reason is FinishReason.ABORT
        elif fits:
            assert (seq.output_token_ids, seq.finish_reason) == (expected, request.expected_reason)
        else:
            assert seq.finish_reason is FinishReason.TOO_LONG
