"""Running a synthesis: seeds in parallel, each explored, its paths chosen and its QA
written, everything committed as it is made, resumable after a crash, and shared by
every process started on it.

:func:`synthesize` is the entry point. A run is a ``synthesis_runs`` row keyed by
``run_id`` with the fingerprint of its identity. Started again while it runs elsewhere,
the new process *joins* it (with or without ``resume``; the fingerprint must match):
seeds are claimed from ``work_claims`` with leases, so each seed is processed to its end
by one process, and the last process ends the run and writes the files. A run that is
not running needs ``resume``, which skips seeds that are ``done`` and continues the
others from their stored nodes (a finished tree is not explored again, stored paths are
reused, and paths that already have a QA candidate get no new one). Each seed has its own sandbox ``worker_id``; its tool calls carry one
``trace_id``, so the server's audit rows of a seed are one query away.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from ..config import ConfigError, load_server_config
from ..db import claims, make_engine, make_session_factory, upgrade
from ..db.rows import process_write_lock
from ..db.base import utcnow
from ..db.synthesis import (
    QA_ACCEPTED,
    RUN_CANCELLED,
    RUN_ERROR,
    RUN_RUNNING,
    RUN_SUCCESS,
    SEED_DONE,
    SEED_ERROR,
    SEED_PENDING,
    SEED_SAMPLED,
    SEED_SAMPLING,
    SynthesisPath,
    SynthesisQA,
    SynthesisRun,
    SynthesisSeed,
)
from ..llm import ChatModel, LLMError
from ..llm.cache import CachedChatModel, ModelCache
from ..sandbox import Sandbox, SandboxError
from ..version import __version__
from .config import FINGERPRINT_VERSION, SynthesisConfig, fingerprint, load_config, resolve_path, run_identity
from .qa import DuplicateIndex, check_qa, generate_qa, trajectory_steps
from .sampler import ExplorationError, TreeSampler
from .seeds import Seed, load_seeds, seeds_checksum
from .selection import ScoredPath, select_paths
from ..runfiles import (FATAL_REPEAT, ClaimLoop, FatalStreak, Heartbeat, claim_owner, reopen_run,  # noqa: F401
                        effective_status, process_alive, process_identity, process_tag, run_beat, run_output_dir,
                        open_shared_run, update_latest)
from .store import add_node, export_run, get_run, node_rows, report, touch

__all__ = ["FATAL_REPEAT", "FingerprintMismatch", "SynthesisError", "Runner", "resume_command", "synthesize"]

log = logging.getLogger(__name__)



def resume_command(run_id: str) -> str:
    """The command that continues a stored synthesis run."""
    return f"agentflow synthesize --run-id {run_id} --resume"


class SynthesisError(Exception):
    """A synthesis run cannot start or continue (the message says why and what to do)."""


class FingerprintMismatch(SynthesisError):
    """A run was resumed, or joined while it runs elsewhere, with another config or
    seeds than it started with. That would mix two experiments, so it is refused; start
    a new run instead."""


def synthesize(config_path: str | Path | dict | None = None, seeds: Any = None, *, progress: bool = False,
               **overrides: Any) -> dict:
    """Run (or resume) a synthesis and return its report.

    Args:
        config_path: A synthesis config file (see ``configs/synthesis/``), a dict, or ``None``.
            ``synthesize(run_id=X, resume=True)`` without a config rebuilds the run from the
            spec and seeds stored in the database.
        seeds: Seeds to use instead of the config's ``seeds_file``: a path, a list of
            strings or a list of ``{content, kwargs}`` dicts (see :func:`load_seeds`).
        progress: Show a tqdm progress bar over seeds.
        overrides: Config keys that replace the file's (``max_workers=8``, ``run_id="r1"``,
            ``resume=True``, ``output_dir=...``, ``database_url=...``).

    Returns:
        The run report: ``seeds``, ``nodes``, ``paths``, ``qa`` (accepted, rejected by
        reason), tokens, timing, ``throughput`` of this invocation, and the paths of
        ``synthesized_qa.jsonl``, ``trajectories.jsonl`` and ``report.json``.

    Raises:
        ConfigError: invalid config or seeds (the message names the key, file or line).
        FingerprintMismatch: resuming or joining a run whose config or seeds differ.
        SynthesisError: the run exists and is not running (without ``resume``), or the
            sandbox lacks the tools.

    Usage::

        report = synthesize("configs/synthesis/rag.json", max_workers=4)
        print(report["qa"]["accepted"], report["qa_file"])
    """
    if config_path is None and overrides.get("resume") and overrides.get("run_id") and not overrides.get("model_name"):
        config_path, stored_seeds = _stored_run(overrides)
        seeds = seeds if seeds is not None else stored_seeds
    cfg = load_config(config_path, **overrides)
    if seeds is None:
        if not cfg.seeds_file:
            raise ConfigError("no seeds: pass seeds=... or set 'seeds_file' in the config")
        seeds = resolve_path(cfg.seeds_file, cfg)
    seed_list = load_seeds(seeds)
    if cfg.number_of_seed:
        seed_list = seed_list[: cfg.number_of_seed]
    return Runner(cfg, seed_list, progress=progress).run()


def database_url(cfg_url: str | None = None) -> tuple[str, Path | None]:
    """The database of synthesis runs: the given URL, else the server's default."""
    server = load_server_config()
    return cfg_url or server.effective_database_url, server.data_dir


def _stored_run(overrides: dict) -> tuple[dict, list[dict]]:
    url, lock_dir = database_url(overrides.get("database_url"))
    upgrade(url, lock_dir=lock_dir if url.startswith("sqlite") else None)
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            run = get_run(session, overrides["run_id"])
            if run is None:
                raise SynthesisError(f"no synthesis run {overrides['run_id']!r} to resume in {url}")
            stored = dict((run.spec or {}).get("config") or {})
            seeds = [{"content": s.content, "kwargs": s.kwargs} for s in run.seeds]
    finally:
        engine.dispose()
    for key in ("api_key", "database_url"):
        if stored.get(key) == "***":
            stored.pop(key)
    for key in ("source", "seeds_file", "number_of_seed"):
        stored.pop(key, None)
    return stored, seeds


def _new_run_id() -> str:
    return f"synth-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


class Runner:
    """One execution of a synthesis config: a new run, the rest of a resumed one, or one
    more process joining a run that is running elsewhere.

    Seeds are claimed from ``work_claims`` (see :mod:`agentflow.db.claims`) a few at a
    time, as rollout claims task samples: a seed ends (``done`` or ``error``) in the
    transaction that records it, only while this process still holds its claim; a killed
    process's seeds are taken over when their lease expires (their stored nodes are
    reused); the last process to find nothing left ends the run and writes its files.
    """

    def __init__(self, cfg: SynthesisConfig, seeds: list[Seed], *, progress: bool = False):
        if not cfg.model_name:
            raise ConfigError("'model_name' is required")
        self.cfg, self.seeds, self.progress = cfg, seeds, progress
        self.stop = threading.Event()
        self.nodes_made = 0
        self.cache: ModelCache | None = None
        self._streak = FatalStreak("seeds")
        self.tag = process_tag()
        self.owner = claim_owner(self.tag)
        self.joined = False
        self._my_qa: set[int] = set()
        self.contamination = None
        """The benchmarks' n-grams for ``overlaps_benchmark`` (read now: a bad file fails
        before anything starts)."""
        if cfg.contamination:
            from .contamination import BenchmarkIndex

            self.contamination = BenchmarkIndex.load(cfg.contamination, lambda p: resolve_path(p, cfg))
        """Ids of the QA this process stored (the others' are read into the duplicate index)."""
        self._qa_seen = 0

    # ------------------------------------------------------------------ setup

    def _open_run(self, s, identity: dict, fp: str) -> SynthesisRun:
        """Create the run, join it (it is running elsewhere: with or without ``resume``),
        or resume it (it is not running: ``resume`` is required); seed its claims."""
        cfg = self.cfg
        run = get_run(s, self.run_id)
        if run is None:
            if cfg.resume:
                raise SynthesisError(f"no synthesis run {self.run_id!r} to resume; leave out --resume to start it")
            run = SynthesisRun(id=self.run_id, status=RUN_RUNNING, model_name=cfg.model_name, fingerprint=fp,
                               fingerprint_version=FINGERPRINT_VERSION, total_seeds=len(self.seeds),
                               output_dir=str(self.output_dir), heartbeat_at=utcnow(), **process_identity(),
                               spec={"config": cfg.public_dict(), "identity": identity,
                                     "agentflow_version": __version__})
            s.add(run)
            s.flush()  # the run row first: a concurrent creator fails here and joins instead
            for i, seed in enumerate(self.seeds):
                s.add(SynthesisSeed(run_id=self.run_id, seed_index=i, content=seed.content, kwargs=seed.kwargs,
                                    status=SEED_PENDING))
            s.flush()
            self._seed_claims(s, resume=False)
            return run
        # running elsewhere: a live process heartbeats the row, or holds live claims (the
        # row may name a process that has just died while others still work on the run)
        if _still_running(run) or claims.live_owners(s, claims.KIND_SYNTHESIS, self.run_id):
            self._check_fingerprint(run, identity, fp, "join")
            self.joined = True
            log.info("joining synthesis run %s (running as pid %s on %s)", self.run_id, run.pid, run.host)
            self._seed_claims(s, resume=False)
            return run
        if not cfg.resume:
            raise SynthesisError(f"synthesis run {self.run_id!r} already exists; pass resume=True (--resume) to "
                                 f"continue it, or choose another run_id")
        self._check_fingerprint(run, identity, fp, "resume")
        touch(run, status=RUN_RUNNING, finished_at=None, error=None, output_dir=str(self.output_dir),
              heartbeat_at=utcnow(), **process_identity())
        self._seed_claims(s, resume=True)
        return run

    def _check_fingerprint(self, run: SynthesisRun, identity: dict, fp: str, verb: str) -> None:
        if run.fingerprint == fp and run.fingerprint_version == FINGERPRINT_VERSION:
            return
        stored = (run.spec or {}).get("identity") or {}
        changed = ", ".join(sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k)))
        if verb == "join":
            raise FingerprintMismatch(
                f"cannot join run {self.run_id!r}: it is running with another config or seeds "
                f"(differs: {changed or 'fingerprint version'}). Use the config of the processes running it, or "
                f"start a new run with another run_id.")
        raise FingerprintMismatch(
            f"cannot resume run {self.run_id!r}: its config or seeds changed since it started "
            f"(changed: {changed or 'fingerprint version'}). Restore the original settings, or "
            f"start a new run with another run_id.")

    def _seed_claims(self, s, *, resume: bool) -> None:
        """Insert the claims a run lacks (a run from before work claims gets them from its
        seeds' statuses). A resume also reopens every seed that is not ``done`` (failed
        ones are retried) and gives back the claims of this machine's dead processes."""
        rows = list(s.scalars(select(SynthesisSeed).where(SynthesisSeed.run_id == self.run_id)))
        claims.seed_items(s, claims.KIND_SYNTHESIS, self.run_id,
                          [claims.Item(str(r.seed_index), 0, position=r.seed_index, done=r.status == SEED_DONE)
                           for r in rows])
        if resume:
            claims.reopen_items(s, claims.KIND_SYNTHESIS, self.run_id,
                                [(str(r.seed_index), 0) for r in rows if r.status != SEED_DONE])
        claims.release_dead(s, claims.KIND_SYNTHESIS, self.run_id)

    def _open_sandbox(self) -> Sandbox:
        cfg = self.cfg
        sandbox = Sandbox(cfg.sandbox_server_url, worker_id=f"synth-{uuid.uuid4().hex[:8]}-main",
                          timeout=cfg.sandbox_timeout, max_retries=3, auto_start_server=cfg.sandbox_auto_start,
                          config_path=cfg.sandbox_config_path)
        try:
            sandbox.start_sync()
        except SandboxError as err:
            raise SynthesisError(f"cannot reach the sandbox server: {err}") from err
        return sandbox

    # ------------------------------------------------------------------ run

    def run(self) -> dict:
        cfg = self.cfg
        identity = run_identity(cfg, seeds_checksum(self.seeds))
        if self.contamination is not None:  # only then: runs without it keep their fingerprint
            identity["contamination"] = self.contamination.identity()
        fp = fingerprint(identity)
        self.run_id = cfg.run_id or _new_run_id()
        # every run has its own folder under output_dir, and output_dir/latest names the newest
        self.output_base = Path(cfg.output_dir or "synthesis_results")
        self.output_dir = run_output_dir(self.output_base, self.run_id)
        url, lock_dir = database_url(cfg.database_url)
        upgrade(url, lock_dir=lock_dir if url.startswith("sqlite") else None)
        # read-then-write transactions share the file with the server's audit writes:
        # BEGIN IMMEDIATE makes them wait their turn instead of failing with "locked"
        engine = make_engine(url, immediate=True)
        self._write_lock = process_write_lock(engine)
        self.sessions = make_session_factory(engine)
        self._db_url = url
        started = time.monotonic()
        try:
            open_shared_run(self.sessions, lambda s: self._open_run(s, identity, fp), self.run_id)
            with self.sessions() as s:
                self.seed_ids = dict(s.execute(select(SynthesisSeed.seed_index, SynthesisSeed.id)
                                               .where(SynthesisSeed.run_id == self.run_id)).all())
            self.output_dir.mkdir(parents=True, exist_ok=True)
            update_latest(self.output_base, self.run_id)
            self.duplicates = DuplicateIndex(cfg.question_similarity_threshold)
            self._read_accepted()
            self.loop = ClaimLoop(self.sessions, self._write_lock, claims.KIND_SYNTHESIS, self.run_id, self.owner,
                                  lease_s=cfg.claim_lease, workers=cfg.max_workers, stop=self.stop,
                                  on_claim=lambda s: reopen_run(s, SynthesisRun, self.run_id))
            try:
                with Heartbeat(run_beat(self.sessions, self._write_lock, lambda s: get_run(s, self.run_id))), \
                        self.loop.heartbeat():
                    stopped = self._execute()
            except SynthesisError as err:
                self._end((RUN_ERROR, str(err)), started)
                raise
            except KeyboardInterrupt:
                self._end((RUN_CANCELLED, "interrupted"), started)
                raise
            return self._end(stopped, started)
        finally:
            if self.cache is not None:
                self.cache.close()
            engine.dispose()

    def _read_accepted(self) -> int:
        """Add the QA accepted since the last look by other processes of the run to the
        near-duplicate index (this process adds its own as it accepts them); returns the
        run's accepted count."""
        with self.sessions() as s:
            rows = s.execute(select(SynthesisQA.id, SynthesisQA.question).where(
                SynthesisQA.run_id == self.run_id, SynthesisQA.status == QA_ACCEPTED,
                SynthesisQA.id > self._qa_seen).order_by(SynthesisQA.id)).all()
            total = s.scalar(select(func.count()).where(SynthesisQA.run_id == self.run_id,
                                                        SynthesisQA.status == QA_ACCEPTED)) or 0
        for qa_id, question in rows:
            if qa_id not in self._my_qa and question:
                self.duplicates.remember(question)
            self._qa_seen = max(self._qa_seen, qa_id)
        self.accepted = int(total)
        return self.accepted

    def _want_more(self) -> bool:
        """Claim more seeds until ``target_qa_count`` QA are accepted (by every process)."""
        target = self.cfg.target_qa_count
        return not target or self._read_accepted() < target

    def _execute(self) -> tuple[str, str] | None:
        """Work on the run until nothing is left; returns why this process stopped early
        (``(status, error)``), or ``None``."""
        cfg = self.cfg
        left = self.loop.outstanding()
        if not left.left or not self._want_more():
            return None
        if cfg.resume or self.joined:
            log.info("%s synthesis run %s: %d of %d seeds left", "joining" if self.joined else "resuming",
                     self.run_id, left.left, len(self.seeds))
        from ..rollout.agent import ToolDiscoveryError, discover_tools

        self.sandbox = self._open_sandbox()
        try:
            try:
                self.toolbox = discover_tools(self.sandbox, cfg.available_tools)
            except ToolDiscoveryError as err:
                raise SynthesisError(str(err)) from err
            except SandboxError as err:
                raise SynthesisError(f"cannot list the sandbox server's tools: {err}") from err
            # every model call goes through the model-call cache (see agentflow.llm.cache)
            self.cache = ModelCache.open(self._db_url, cfg.cache, run_id=self.run_id)
            self.model = CachedChatModel(ChatModel(cfg.model_name, api_key=cfg.api_key, base_url=cfg.base_url,
                                                   timeout=cfg.request_timeout, max_retries=cfg.max_retries,
                                                   temperature=cfg.temperature, max_tokens=cfg.max_tokens),
                                         self.cache, kind="synthesis")
            self._pool(len(self.seeds) - left.left)
        finally:
            self.sandbox.close_sync()
        if self._streak.message:
            log.debug("%s", self._streak.message)
            return RUN_ERROR, self._streak.message
        return None

    def _note_failure(self, err: Exception | None) -> None:
        """Count seeds failing in a row with the same fatal model error; at
        :data:`FATAL_REPEAT` stop the run. ``None``: a seed that did not fail that way."""
        from ..llm import LLMAuthError, LLMBadRequestError
        from ..rollout.store import error_signature

        cause = err
        while cause is not None and not isinstance(cause, LLMError):
            cause = cause.__cause__
        if not isinstance(cause, (LLMAuthError, LLMBadRequestError)):
            if err is None:
                self._streak.reset()
            return
        short = type(cause).__name__ + (f" HTTP {cause.status}" if cause.status else "")
        if self._streak.failed(error_signature(f"{type(cause).__name__}: {cause}"), short,
                               resume_command(self.run_id)):
            self.stop.set()

    def _pool(self, already: int) -> None:
        from tqdm import tqdm

        bar = tqdm(total=len(self.seeds), initial=already, desc="synthesis", unit="seed",
                   disable=not self.progress, dynamic_ncols=True)

        def show(_outcome: bool) -> None:
            bar.update(1)
            bar.set_postfix({"accepted": self.accepted}, refresh=False)

        try:
            self.loop.run(self._seed, show, self._want_more)
        except KeyboardInterrupt:
            log.warning("interrupted: in-flight expansions were stopped (stored nodes are kept)")
            raise
        finally:
            bar.close()

    # ------------------------------------------------------------------ one seed

    def _seed(self, claim: claims.Claimed) -> bool | None:
        """Explore, select and write QA for one claimed seed; ``True`` done, ``False``
        failed, ``None`` skipped (stopping, ``target_qa_count`` reached, or the claim was
        taken over by another process): its claim is then given back."""
        cfg = self.cfg
        if self.stop.is_set() or (cfg.target_qa_count and self.accepted >= cfg.target_qa_count):
            return None
        index = int(claim.item)
        seed_id, seed = self.seed_ids[index], self.seeds[index]
        sandbox = Sandbox(cfg.sandbox_server_url, worker_id=f"synth-{uuid.uuid4().hex[:8]}-s{index}",
                          timeout=cfg.sandbox_timeout, max_retries=3)
        trace_id = f"syn-{uuid.uuid4().hex}"
        with self._write_lock, self.sessions() as s:
            row = s.get(SynthesisSeed, seed_id)
            status = row.status
            touch(row, status=SEED_SAMPLING if status in (SEED_PENDING, SEED_SAMPLING, SEED_ERROR) else status,
                  attempts=row.attempts + 1, started_at=row.started_at or utcnow(), worker_id=sandbox.worker_id,
                  error=None)
            s.commit()
            rows = node_rows(s, seed_id)  # a seed taken over from a killed process goes on from its stored nodes
        opened: list[str] = []
        try:
            opened = self._open_sessions(sandbox)
            sampler = TreeSampler(cfg, self.model, sandbox, self.toolbox, seed, trace_id=trace_id, stop=self.stop,
                                  save_node=lambda rec: self._save_node(seed_id, rec))
            root = sampler.run(sampler.load(rows) if rows else None)
            if self.stop.is_set():
                return None
            self._set_seed(seed_id, status=SEED_SAMPLED)
            self._qa(seed_id, seed, sampler, root)
            if not self._end_seed(claim, seed_id, status=SEED_DONE, finished_at=utcnow()):
                return None
            self._note_failure(None)
            return True
        except (ExplorationError, LLMError) as err:
            log.warning("seed %d failed: %s", index, err)
            if not self._end_seed(claim, seed_id, status=SEED_ERROR, error=str(err)):
                return None
            self._note_failure(err)
            return False
        except Exception as err:  # boundary: a bug must not kill the run; the seed is retried on resume
            log.exception("seed %d failed unexpectedly", index)
            if not self._end_seed(claim, seed_id, status=SEED_ERROR, error=f"unexpected {type(err).__name__}: {err}"):
                return None
            return False
        finally:
            for resource in opened:
                try:
                    sandbox.destroy_session_sync(resource)
                except SandboxError:
                    pass
            sandbox.close_sync()

    def _end_seed(self, claim: claims.Claimed, seed_id: int, **fields: Any) -> bool:
        """Record how a seed ended and end its claim in one transaction, only while this
        process still holds the claim; False when another process took the seed over."""
        with self._write_lock, self.sessions() as s:
            try:
                claims.fence(s, claim.id, self.owner, done=True, lease_s=self.cfg.claim_lease)
            except claims.ClaimLost:
                s.rollback()
                log.warning("seed %s was taken over by another process after this one's claim expired; "
                            "its outcome here is dropped", claim.item)
                return False
            touch(s.get(SynthesisSeed, seed_id), **fields)
            s.commit()
        return True

    def _open_sessions(self, sandbox: Sandbox) -> list[str]:
        """Sessions of ``resource_types`` with their ``resource_init_configs`` (AgentFlow
        compatibility). A resource the server refuses is skipped with a warning."""
        opened = []
        for resource in self.cfg.resource_types:
            init = (self.cfg.resource_init_configs.get(resource) or {}).get("content") or None
            try:
                sandbox.create_session_sync(resource, init)
                opened.append(resource)
            except SandboxError as err:
                log.warning("no %s session for synthesis (tool calls use temporary sessions): %s", resource, err)
        return opened

    def _save_node(self, seed_id: int, rec: dict) -> int:
        with self._write_lock, self.sessions() as s:
            row = add_node(s, self.run_id, seed_id, rec)
            s.commit()
            self.nodes_made += 1
            return row.id

    def _set_seed(self, seed_id: int, **fields: Any) -> None:
        with self._write_lock, self.sessions() as s:
            touch(s.get(SynthesisSeed, seed_id), **fields)
            s.commit()

    def _qa(self, seed_id: int, seed: Seed, sampler: TreeSampler, root) -> None:
        cfg = self.cfg
        with self.sessions() as s:
            stored = list(s.scalars(select(SynthesisPath).where(SynthesisPath.seed_id == seed_id)))
            has_qa = set(s.scalars(select(SynthesisQA.path_id).where(SynthesisQA.seed_id == seed_id)))
        if stored:  # a resumed seed whose selection was already made
            chosen = [(p.id, [sampler.nodes[i] for i in p.node_ids]) for p in sorted(stored, key=lambda p: p.rank or 0)
                      if p.selected]
        else:
            scored = select_paths(root, min_depth=cfg.min_depth, max_depth=cfg.max_depth,
                                  max_selected=cfg.max_selected_traj, threshold=cfg.path_similarity_threshold,
                                  n_tools=len(self.toolbox.specs))
            chosen = self._store_paths(seed_id, scored)
        for path_id, nodes in chosen:
            if path_id in has_qa or self.stop.is_set():
                continue
            steps = trajectory_steps(nodes)
            cand = generate_qa(self.model, cfg, seed, steps)
            self._read_accepted()  # what other processes of the run accepted meanwhile counts as a duplicate too
            check_qa(cand, steps, cfg, self.duplicates, self.contamination)
            with self._write_lock, self.sessions() as s:
                qa = SynthesisQA(run_id=self.run_id, seed_id=seed_id, path_id=path_id, status=cand.status,
                                 reason=cand.reason, checks=cand.checks, question=cand.question,
                                 answer=cand.answer, reasoning_steps=cand.reasoning_steps, raw=cand.raw,
                                 model_name=cfg.model_name, prompt_tokens=cand.usage.prompt_tokens,
                                 completion_tokens=cand.usage.completion_tokens)
                s.add(qa)
                s.commit()
                self._my_qa.add(qa.id)
                if cand.status == QA_ACCEPTED:
                    self.accepted += 1

    def _store_paths(self, seed_id: int, scored: list[ScoredPath]) -> list[tuple[int, list]]:
        chosen = []
        with self._write_lock, self.sessions() as s:
            rows = []
            for p in scored:
                row = SynthesisPath(run_id=self.run_id, seed_id=seed_id, leaf_node_id=p.leaf.id, node_ids=p.node_ids,
                                    depth=p.depth, score=p.score, depth_score=round(p.depth_score, 6),
                                    info_score=round(p.info_score, 6), diversity_score=round(p.diversity_score, 6),
                                    selected=p.selected, rank=p.rank, max_similarity=p.max_similarity, note=p.note)
                s.add(row)
                rows.append((row, p))
            s.commit()
            for row, p in rows:
                if p.selected:
                    chosen.append((row.id, p.nodes))
        return chosen

    # ------------------------------------------------------------------ the end

    def _end(self, stopped: tuple[str, str] | None, started: float) -> dict:
        """End this process's part of the run and return the report.

        With the run's row locked (two processes ending at once take turns): if the run
        is still running and no other process holds a live claim, this process is the
        last one: it sets the final status and writes the report and files. Otherwise the
        report is the stored one (another process ended the run) or a live one (others
        still work on it; the last of them ends it).
        """
        wall = time.monotonic() - started
        throughput = {"nodes_made": self.nodes_made, "wall_time_s": round(wall, 3),
                      "nodes_per_minute": round(self.nodes_made / wall * 60, 2) if wall > 0 else None}
        with self._write_lock, self.sessions() as s:
            run = s.get(SynthesisRun, self.run_id, with_for_update=True)
            left = claims.outstanding(s, claims.KIND_SYNTHESIS, self.run_id, self.owner)
            if run.status != RUN_RUNNING and run.report:
                s.commit()
                return {**run.report, "status": effective_status(run), "error": run.error}
            if run.status == RUN_RUNNING and left.live_others:
                rep = {**report(s, run), "throughput": throughput}
                if stopped:
                    rep["status"], rep["error"] = stopped
                s.commit()
                return rep
            status, error = stopped or self._final_status(s)
            touch(run, status=status, error=error, finished_at=utcnow(), heartbeat_at=utcnow(),
                  output_dir=str(self.output_dir))
            s.flush()
            rep = export_run(s, self.run_id, self.output_dir, extra={"error": error, "throughput": throughput,
                                                                    "model_cache": self._cache_counts()})
            run.report = rep
            s.commit()
        return rep

    def _cache_counts(self) -> dict:
        """The model-call cache as this process used it: mode, calls, hits, hit rate and
        the entries it stored (a run several processes shared counts the last one's)."""
        c = dict(self.cache.counts) if self.cache is not None else {"calls": 0, "hits": 0, "misses": 0, "stored": 0}
        c["mode"] = self.cfg.cache
        c["hit_rate"] = round(c["hits"] / c["calls"], 6) if c["calls"] else None
        return c

    def _final_status(self, s) -> tuple[str, str | None]:
        """The run's status from every process's seeds."""
        failed = list(s.scalars(select(SynthesisSeed.seed_index).where(
            SynthesisSeed.run_id == self.run_id, SynthesisSeed.status == SEED_ERROR).order_by(SynthesisSeed.seed_index)))
        if failed:
            return RUN_ERROR, (f"{len(failed)} seed(s) failed ({', '.join(map(str, failed[:10]))}); "
                               f"see synthesis_seeds.error; fix the cause, then resume to retry them: "
                               f"{resume_command(self.run_id)}")
        return RUN_SUCCESS, None


def _still_running(run: SynthesisRun) -> bool:
    """Another live process runs this run (its heartbeat is fresh, or its pid is alive here)."""
    if run.status != RUN_RUNNING or run.pid == os.getpid() and run.host == process_identity()["host"]:
        return False
    return effective_status(run) == RUN_RUNNING and process_alive(run.pid, run.host) is not False \
        and run.heartbeat_at is not None
