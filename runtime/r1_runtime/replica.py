"""`serve` for a tensor- or pipeline-parallel replica: one process per local device.

Every pod (node) starts its local ranks as child processes; its own process is the node's
first rank. On node 0 that is rank 0, the driver: it serves the OpenAI API, and its engine
sends each step to the other ranks. On the other nodes it runs steps headless, beside a
server with only `/health`, `/ready` and `/metrics`. Any rank that fails ends the replica:
rank 0 turns unready, fails the requests in flight and exits non-zero, the others exit
non-zero too, and the LeaderWorkerSet recreates the group.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Mapping
from multiprocessing.process import BaseProcess

import torch

from r1_runtime.build import build_engine, build_stage, cached_engine_key
from r1_runtime.config import ConfigError, RuntimeConfig
from r1_runtime.distributed import messages
from r1_runtime.distributed.group import ProcessGroups, Rendezvous, free_port, join, leave
from r1_runtime.distributed.messages import Kind
from r1_runtime.distributed.worker import run_worker
from r1_runtime.engine_cache.store import Resolved
from r1_runtime.logs import configure_logging
from r1_runtime.model_info import ModelInfo
from r1_runtime.plan import engine_device, plan_engine
from r1_runtime.server.headless import HeadlessServer
from r1_runtime.server.model import model_loader
from r1_runtime.server.serve import serve

logger = logging.getLogger(__name__)

CHILD_EXIT_SECONDS = 30.0  # for local ranks to exit once told to stop
PR_SET_PDEATHSIG = 1


def rendezvous_of(config: RuntimeConfig, environ: Mapping[str, str]) -> Rendezvous:
    """MASTER_ADDR and MASTER_PORT, as the operator renders them (the leader pod's address);
    a single-node replica without them meets on a free loopback port."""
    address, port = environ.get("MASTER_ADDR"), environ.get("MASTER_PORT")
    if address is None or port is None:
        if config.nnodes > 1:
            raise ConfigError(
                "--nnodes above 1 needs MASTER_ADDR and MASTER_PORT in the environment: the "
                "leader pod's address and the rendezvous port (the operator sets them from "
                "LWS_LEADER_ADDRESS)"
            )
        address, port = "127.0.0.1", str(free_port())
    if not port.isdigit():
        raise ConfigError(f"MASTER_PORT must be a port number, got {port!r}")
    return Rendezvous(address, int(port), config.rendezvous_timeout, config.collective_timeout)


def serve_replica(config: RuntimeConfig, environ: Mapping[str, str]) -> int:
    """This pod's part of the replica; the exit status (non-zero when any rank failed)."""
    configure_logging(config.log_dir, "runtime.log", required=True)
    rendezvous = rendezvous_of(config, environ)
    info = ModelInfo.read(config.model)
    plan_engine(config, info)  # NOTE: a flag error stops the pod before any rank starts
    children = _start_local_ranks(config, rendezvous)
    try:
        if config.node_rank == 0:
            status = _serve_driver(config, rendezvous)
        else:
            status = _run_headless(config, info, rendezvous)
    except BaseException:
        _reap(children, at_once=True)
        raise
    return _reap(children, at_once=status != 0) or status


def build_replica(config: RuntimeConfig, environ: Mapping[str, str]) -> Resolved | None:
    """`r1-runtime build` of a parallel engine: rank 0's entry, found when every rank's
    entry is in the cache (nothing loaded), else built: each rank its own entry, rank 0's
    warm-up driving them all. One node only (the pre-build Job is one pod). None when the
    backend builds nothing."""
    if config.nnodes > 1:
        raise ConfigError("r1-runtime build runs on one node: --nnodes must be 1")
    plan = plan_engine(config, ModelInfo.read(config.model))
    keys = [cached_engine_key(config, plan, rank) for rank in range(config.layout.world_size)]
    if keys[0] is None:
        return None
    found = [key.store.lookup(key.key) for key in keys if key is not None]
    manifest = found[0]
    if manifest is not None and None not in found:
        logger.info("engine cache hit for every rank: %s", keys[0].entry)
        return Resolved(keys[0].key, keys[0].entry, manifest, is_built=False)
    rendezvous = rendezvous_of(config, environ)
    children = _start_local_ranks(config, rendezvous)
    try:
        groups = _join(config, rendezvous, local_rank=0)
        built = build_engine(config, ModelInfo.read(config.model), plan=plan, groups=groups)
        messages.send(groups, Kind.STOP)
        leave()
    except BaseException:
        _reap(children, at_once=True)
        raise
    if _reap(children, at_once=False):
        raise RuntimeError("a rank failed while building its engine; see its log above")
    return built.cache_entry


def _serve_driver(config: RuntimeConfig, rendezvous: Rendezvous) -> int:
    joined: list[ProcessGroups] = []

    def join_replica() -> ProcessGroups:
        joined.append(_join(config, rendezvous, local_rank=0))
        return joined[0]

    status = serve(config, model_loader(config, join_replica))
    if joined and status == 0:
        try:
            messages.send(joined[0], Kind.STOP)
        except RuntimeError as error:
            logger.warning("could not tell every rank to stop: %s", error)
        leave()  # NOTE: not after a failure: tearing down a broken NCCL group can block
    return status


def _run_headless(config: RuntimeConfig, info: ModelInfo, rendezvous: Rendezvous) -> int:
    server = HeadlessServer(config)
    server.start()
    try:
        status = _run_rank(config, info, rendezvous, local_rank=0, on_ready=server)
        server.phase = "ready" if status == 0 else "failed"
        return status
    finally:
        server.stop()


def _run_rank(
    config: RuntimeConfig,
    info: ModelInfo,
    rendezvous: Rendezvous,
    *,
    local_rank: int,
    on_ready: HeadlessServer | None = None,
) -> int:
    try:
        groups = _join(config, rendezvous, local_rank)
        stage = build_stage(config, info, groups)
    except Exception:
        logger.exception("node %d, local rank %d: could not start", config.node_rank, local_rank)
        return 1
    if on_ready is not None:
        on_ready.phase = "ready"
    status = run_worker(stage)
    if status == 0:
        leave()
    return status


def _join(config: RuntimeConfig, rendezvous: Rendezvous, local_rank: int) -> ProcessGroups:
    place = config.layout.place(config.node_rank, local_rank)
    return join(config.layout, place, engine_device(config), rendezvous)


def _start_local_ranks(config: RuntimeConfig, rendezvous: Rendezvous) -> list[BaseProcess]:
    """The pod's ranks after its first, each a process; this one keeps its share of the CPU."""
    _share_cpu_threads(config)
    return [
        _start_rank(config, rendezvous, local_rank)
        for local_rank in range(1, config.layout.local_world_size)
    ]


def _start_rank(config: RuntimeConfig, rendezvous: Rendezvous, local_rank: int) -> BaseProcess:
    process = multiprocessing.get_context("spawn").Process(
        target=_rank_process,
        args=(config, rendezvous, local_rank, os.getpid()),
        name=f"r1-rank-node{config.node_rank}-local{local_rank}",
    )
    process.start()
    return process


def _rank_process(
    config: RuntimeConfig, rendezvous: Rendezvous, local_rank: int, parent: int
) -> None:
    """A local rank's process: dies with its parent (never an orphan holding a GPU), and
    leaves SIGTERM and SIGINT to it: the parent drains, then tells the ranks to stop."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        sys.exit(1)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(config.log_dir, f"runtime-local{local_rank}.log", required=False)
    _share_cpu_threads(config)
    info = ModelInfo.read(config.model)
    sys.exit(_run_rank(config, info, rendezvous, local_rank=local_rank))


def _share_cpu_threads(config: RuntimeConfig) -> None:
    """On the CPU, the node's ranks split its cores rather than each take them all."""
    if engine_device(config).type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads() // config.layout.local_world_size))


def _reap(children: list[BaseProcess], *, at_once: bool) -> int:
    """Wait for the local ranks (they exit once rank 0 stops them); kill them `at_once`
    when this rank failed, or those that do not exit. 1 when any failed."""
    status = 0
    for child in children:
        if at_once:
            child.kill()
        child.join(CHILD_EXIT_SECONDS)
        if child.exitcode is None:
            logger.warning("%s did not exit; killing it", child.name)
            child.kill()
            child.join(CHILD_EXIT_SECONDS)
            status = 1
        elif child.exitcode != 0 and not at_once:
            logger.error("%s exited with status %s", child.name, child.exitcode)
            status = 1
    return status
