"""Running a rollout: tasks × samples over a thread pool, each finished task committed
at once, resumable after a crash or Ctrl-C, and shared by every process started on it.

:func:`rollout` is the entry point. A run is a ``rollout_runs`` row keyed by ``run_id``
with the fingerprint of its identity (:func:`~agentflow.rollout.config.run_identity`).
Starting a run id that exists:

* while it runs elsewhere (a live process heartbeats it), *joins* it, with or without
  ``resume``: the processes claim its task samples from ``work_claims`` with leases
  (:mod:`agentflow.db.claims`), so every task sample ends exactly once whichever process
  dies, and the last process to find nothing left ends the run and writes its files;
* when it is not running (finished, cancelled, or its processes are gone), needs
  ``resume``: it runs every task sample without a final attempt and retries those whose
  newest attempt is an infrastructure failure.

Either way the fingerprint must match. Each task slot of each process has its own
sandbox ``worker_id`` (sessions opened by a task are closed when it ends).
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import threading
import uuid
from pathlib import Path
from typing import Any

from ..config import ConfigError, load_server_config
from ..db import claims, make_engine, make_session_factory, upgrade
from ..db.rows import process_write_lock
from ..db.rollout import (
    ATTEMPT_COMPLETED,
    ATTEMPT_INFRA_ERROR,
    RUN_CANCELLED,
    RUN_ERROR,
    RUN_RUNNING,
    RUN_SUCCESS,
    RolloutRun,
)
from ..db.base import utcnow
from ..llm import ChatModel
from ..llm.cache import CachedChatModel, ModelCache
from ..sandbox import Sandbox, SandboxError
from ..version import __version__
from .agent import AgentResult, AgentSettings, Cancelled, ToolBox, ToolDiscoveryError, discover_tools, run_agent
from .config import FINGERPRINT_VERSION, RolloutConfig, fingerprint, load_config, resolve_path, run_identity
from . import qa_links
from .metrics import Score, score_prediction
from .replay import ReplaySource, UnknownReplayRun
from ..runfiles import (FATAL_REPEAT, ClaimLoop, FatalStreak, Heartbeat, claim_owner, reopen_run,  # noqa: F401
                        effective_status, process_alive, process_identity, process_tag, run_beat, run_output_dir,
                        open_shared_run, update_latest, worker_name)
from .store import (add_attempt, error_reason, error_signature, export_run, get_run, latest_attempts, summarize,
                    touch_run)
from .tasks import Task, dataset_checksum, load_tasks, select_tasks

__all__ = ["FATAL_REPEAT", "FingerprintMismatch", "RolloutError", "Runner", "pipeline", "quick_rollout", "rollout",
           "resume_command"]

log = logging.getLogger(__name__)



def resume_command(run_id: str) -> str:
    """The command that continues a stored rollout run."""
    return f"agentflow rollout --run-id {run_id} --resume"


class RolloutError(Exception):
    """A rollout cannot start or continue (the message says why and what to do)."""


class FingerprintMismatch(RolloutError):
    """A run was resumed, or joined while it runs elsewhere, with another configuration
    or dataset than it started with. That would mix results of two different
    experiments, so it is refused; start a new run instead (or use the original settings)."""


def rollout(config_path: str | Path | dict | None = None, *, progress: bool = True, **overrides: Any) -> dict:
    """Run (or resume) a rollout and return its summary.

    Args:
        config_path: A rollout config file (see ``configs/rollout/``), a dict, or ``None``.
            ``rollout(run_id=X, resume=True)`` without a config rebuilds the run from the
            spec stored in the database (API keys come from the environment or overrides).
        progress: Show a tqdm progress bar.
        overrides: Config keys that replace the file's (``max_workers=8``,
            ``run_id="r1"``, ``resume=True``, ``database_url=...``).

    Returns:
        The summary: ``accuracy``, ``average_score``, ``total_tasks``, ``completed``,
        ``failed``, ``unscored``, ``run_id``, ``results_file``, timing and token totals
        (also written to ``summary.json`` in ``output_dir``).

    Raises:
        ConfigError: the config or the task file is invalid.
        FingerprintMismatch: resuming or joining a run whose config or dataset differs.
        RolloutError: the run exists and is not running (without ``resume``), or the
            sandbox has no such tools.
        KeyboardInterrupt: after a clean stop on Ctrl-C (finished tasks are kept).

    Usage::

        summary = rollout("configs/rollout/rag.json", max_workers=4)
        print(summary["accuracy"])
    """
    if config_path is None and overrides.get("resume") and overrides.get("run_id") and not overrides.get("model_name"):
        config_path = _stored_config(overrides)
    cfg = load_config(config_path, **overrides)
    return Runner(cfg, progress=progress).run()


def pipeline(config_path: str | Path | dict | None = None, **overrides: Any) -> dict:
    """The older name of :func:`rollout` (same arguments, same result)."""
    return rollout(config_path, **overrides)


def quick_rollout(
    question: str,
    tools: list[str] | None = None,
    model_name: str | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    sandbox_url: str = "http://127.0.0.1:18890",
    max_turns: int = 10,
    *,
    system_prompt: str | list[str] | None = None,
    kwargs: dict | None = None,
    **config: Any,
) -> dict:
    """Answer one question with the agent, without a config file, dataset or database.

    Args:
        question: The question.
        tools: Tool names or wildcards (``["bash:run"]``, ``["web-search", "web-visit"]``);
            none means a plain chat without the sandbox.
        model_name, api_key, base_url: The model.
        sandbox_url: The sandbox server.
        max_turns: Model calls before giving up.
        system_prompt: Optional system prompt.
        kwargs: Parameters merged into every tool call that accepts them.
        config: Further rollout config keys (``temperature``, ``max_tokens``,
            ``request_timeout``, ``task_timeout``, ``max_tool_output_chars``).

    Returns:
        ``{"answer", "status", "turns", "final_response", "messages", "tool_calls",
        "usage", "error", "trace_id"}``.
    """
    cfg = load_config(None, model_name=model_name, api_key=api_key, base_url=base_url, max_turns=max_turns,
                      sandbox_server_url=sandbox_url, available_tools=list(tools or []),
                      system_prompt=system_prompt, **config)
    if not cfg.model_name:
        raise ConfigError("quick_rollout needs model_name")
    model = _make_model(cfg)
    task = Task(id="quick", question=question, kwargs=dict(kwargs or {}))
    trace_id = f"quick-{uuid.uuid4().hex[:16]}"
    if tools:
        with Sandbox(cfg.sandbox_server_url, worker_id=f"quick-{uuid.uuid4().hex[:8]}", timeout=cfg.sandbox_timeout,
                     auto_start_server=cfg.sandbox_auto_start, config_path=cfg.sandbox_config_path) as sandbox:
            toolbox = _discover(sandbox, cfg.available_tools)
            result = run_agent(task, model, sandbox, toolbox, _settings(cfg), trace_id=trace_id)
    else:
        result = run_agent(task, model, None, ToolBox([], {}, {}), _settings(cfg), trace_id=trace_id)
    return {"answer": result.prediction, "status": result.status, "turns": result.turns,
            "final_response": result.final_response, "messages": result.messages, "tool_calls": result.tool_calls,
            "usage": {"prompt_tokens": result.usage.prompt_tokens, "completion_tokens": result.usage.completion_tokens,
                      "total_tokens": result.usage.total_tokens},
            "error": result.error, "trace_id": trace_id}


def _make_model(cfg: RolloutConfig) -> ChatModel:
    return ChatModel(cfg.model_name, api_key=cfg.api_key, base_url=cfg.base_url, timeout=cfg.request_timeout,
                     max_retries=cfg.max_retries, temperature=cfg.temperature, max_tokens=cfg.max_tokens)


def _make_judge(cfg: RolloutConfig) -> ChatModel:
    return ChatModel(cfg.evaluator_model_name or cfg.model_name,
                     api_key=cfg.evaluator_api_key or cfg.api_key,
                     base_url=cfg.evaluator_base_url or cfg.base_url, timeout=cfg.request_timeout,
                     max_retries=cfg.evaluator_max_retries, temperature=cfg.evaluator_temperature,
                     extra_params=cfg.evaluator_extra_params)


def _settings(cfg: RolloutConfig) -> AgentSettings:
    return AgentSettings(system_prompt=cfg.system_prompt, max_turns=cfg.max_turns,
                         max_tool_output_chars=cfg.max_tool_output_chars, task_timeout=cfg.task_timeout,
                         request_timeout=cfg.request_timeout)


def _discover(sandbox: Sandbox, patterns: list[str]) -> ToolBox:
    try:
        return discover_tools(sandbox, patterns)
    except ToolDiscoveryError as err:
        raise RolloutError(str(err)) from err


def database_url(cfg_url: str | None = None) -> tuple[str, Path | None]:
    """The database of rollout runs: the given URL, else the server's default
    (``AGENTFLOW_DATABASE_URL``, else sqlite in ``AGENTFLOW_HOME``), and the directory
    used to serialise migrations."""
    server = load_server_config()
    return cfg_url or server.effective_database_url, server.data_dir


def _stored_config(overrides: dict) -> dict:
    url, lock_dir = database_url(overrides.get("database_url"))
    upgrade(url, lock_dir=lock_dir)
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            run = get_run(session, overrides["run_id"])
            if run is None:
                raise RolloutError(f"no rollout run {overrides['run_id']!r} to resume in {url}")
            stored = dict((run.spec or {}).get("config") or {})
    finally:
        engine.dispose()
    for key in ("api_key", "evaluator_api_key", "database_url"):
        if stored.get(key) == "***":
            stored.pop(key)
    stored.pop("source", None)
    return stored


def _new_run_id(benchmark: str) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{benchmark or 'rollout'}-{stamp}-{uuid.uuid4().hex[:4]}"


class Runner:
    """One execution of a rollout config: a new run, the rest of a resumed one, or one
    more process joining a run that is running elsewhere.

    Task samples are claimed from ``work_claims`` (see :mod:`agentflow.db.claims`) a few
    at a time, so any number of processes can work on one run: each stores a finished
    task and ends its claim in one transaction, renews its leases while it lives, takes
    over the claims of a process whose lease expired, and the last one to find nothing
    left ends the run and writes its files.
    """

    def __init__(self, cfg: RolloutConfig, *, progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        self.stop = threading.Event()
        self._sessionless: set[str] = set()
        self.tag = process_tag()
        """Makes this execution's sandbox worker ids and claim owner unique."""
        self.owner = claim_owner(self.tag)
        self.joined = False
        self.qa_links: dict[str, int] = {}
        """Task id → the ``synthesis_qa`` id it is (see :mod:`agentflow.rollout.qa_links`)."""
        """True when the run was already running elsewhere and this process joined it."""
        self.cache: ModelCache | None = None
        self.replay: ReplaySource | None = None

    # ------------------------------------------------------------------ setup

    def _load_tasks(self) -> list[Task]:
        cfg = self.cfg
        if not cfg.model_name:
            raise ConfigError("'model_name' is required")
        if not cfg.data_path:
            raise ConfigError("'data_path' is required (the benchmark's JSONL file)")
        tasks = select_tasks(load_tasks(resolve_path(cfg.data_path, cfg)), cfg.task_ids, cfg.number_of_tasks)
        if not tasks:
            raise ConfigError(f"no tasks to run in {cfg.data_path}")
        return tasks

    def _open_run(self, session, tasks: list[Task], identity: dict, fp: str) -> RolloutRun:
        """Create the run, join it (it is running elsewhere: with or without ``resume``),
        or resume it (it is not running: ``resume`` is required); seed its claims."""
        cfg = self.cfg
        run = get_run(session, self.run_id)
        if run is None:
            if cfg.resume:
                raise RolloutError(f"no rollout run {self.run_id!r} to resume; leave out --resume to start it")
            run = self._new_run(tasks, identity, fp)
            session.add(run)
            session.flush()  # the run row first: a concurrent creator fails here and joins instead
            claims.seed_items(session, claims.KIND_ROLLOUT, self.run_id, self._items(tasks, {}))
            return run
        # running elsewhere: a live process heartbeats the row, or holds live claims (the
        # row may name a process that has just died while others still work on the run)
        if _still_running(run) or claims.live_owners(session, claims.KIND_ROLLOUT, self.run_id):
            self._check_fingerprint(run, identity, fp, "join")
            self.joined = True
            log.info("joining rollout run %s (running as pid %s on %s)", self.run_id, run.pid, run.host)
            self._seed_claims(session, tasks, resume=False)
            return run
        if not cfg.resume:
            raise RolloutError(f"rollout run {self.run_id!r} already exists; pass resume=True (--resume) to "
                               f"continue it, or choose another run_id")
        self._check_fingerprint(run, identity, fp, "resume")
        touch_run(run, status=RUN_RUNNING, finished_at=None, error=None, output_dir=str(self.output_dir),
                  heartbeat_at=utcnow(), **process_identity())
        self._seed_claims(session, tasks, resume=True)
        return run

    def _new_run(self, tasks: list[Task], identity: dict, fp: str) -> RolloutRun:
        cfg = self.cfg
        return RolloutRun(
            id=self.run_id, benchmark_name=cfg.benchmark_name, status=RUN_RUNNING, model_name=cfg.model_name,
            data_path=str(cfg.data_path), fingerprint=fp, fingerprint_version=FINGERPRINT_VERSION,
            total_tasks=len(tasks) * cfg.n_samples, output_dir=str(self.output_dir),
            heartbeat_at=utcnow(), **process_identity(),
            spec={"config": cfg.public_dict(), "identity": identity, "scoring": cfg.scoring,
                  "metric": cfg.metric if cfg.scoring else None, "agentflow_version": __version__,
                  "dataset": {"path": str(resolve_path(cfg.data_path, cfg)),
                              "sha256": identity["dataset_sha256"], "task_ids": [t.id for t in tasks]}},
        )

    def _check_fingerprint(self, run: RolloutRun, identity: dict, fp: str, verb: str) -> None:
        if run.fingerprint == fp and run.fingerprint_version == FINGERPRINT_VERSION:
            return
        stored = (run.spec or {}).get("identity") or {}
        changed = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
        details = "; ".join(f"{k}: {_short(stored.get(k))} -> {_short(identity.get(k))}" for k in changed)
        if verb == "join":
            raise FingerprintMismatch(
                f"cannot join run {self.run_id!r}: it is running with another configuration or dataset "
                f"({details or 'fingerprint version changed'}). Use the config of the processes running it, or "
                f"start a new run with another run_id.")
        raise FingerprintMismatch(
            f"cannot resume run {self.run_id!r}: its configuration or dataset changed since it started "
            f"({details or 'fingerprint version changed'}). Restore the original settings, or start a new "
            f"run with another run_id.")

    def _items(self, tasks: list[Task], newest: dict) -> list[claims.Item]:
        """Every task sample in dataset order; those with a final attempt are done, and
        each counts the attempts it has (the next one is numbered after them)."""
        n = self.cfg.n_samples
        return [claims.Item(t.id, i, position=k * n + i,
                            done=(t.id, i) in newest and newest[(t.id, i)].status != ATTEMPT_INFRA_ERROR,
                            results=newest[(t.id, i)].attempt if (t.id, i) in newest else 0)
                for k, t in enumerate(tasks) for i in range(n)]

    def _seed_claims(self, session, tasks: list[Task], *, resume: bool) -> None:
        """Insert the claims a run lacks (a run from before work claims gets them from its
        attempts). A resume also reopens the samples whose newest attempt is an
        infrastructure failure, and gives back the claims of this machine's dead processes
        at once (others' expire with their lease)."""
        newest = latest_attempts(session, self.run_id)
        claims.seed_items(session, claims.KIND_ROLLOUT, self.run_id, self._items(tasks, newest))
        if resume:
            retry = [key for key, a in newest.items() if a.status == ATTEMPT_INFRA_ERROR]
            claims.reopen_items(session, claims.KIND_ROLLOUT, self.run_id, retry)
        claims.release_dead(session, claims.KIND_ROLLOUT, self.run_id)

    # ------------------------------------------------------------------ run

    def run(self) -> dict:
        cfg = self.cfg
        tasks = self._load_tasks()
        self.tasks = {t.id: t for t in tasks}
        identity = run_identity(cfg, dataset_checksum(tasks))
        fp = fingerprint(identity)
        self.run_id = cfg.run_id or _new_run_id(cfg.benchmark_name)
        # every run has its own folder under output_dir, and output_dir/latest names the newest
        self.output_base = Path(cfg.output_dir or "rollout_results")
        self.output_dir = run_output_dir(self.output_base, self.run_id)
        url, lock_dir = database_url(cfg.database_url)
        upgrade(url, lock_dir=lock_dir if url.startswith("sqlite") else None)
        # read-then-write transactions on a database the server also writes: take the
        # write lock at BEGIN, or sqlite fails them with "database is locked" at once
        engine = make_engine(url, immediate=True)
        self._write_lock = process_write_lock(engine)
        self.sessions = make_session_factory(engine)
        self._db_url = url
        try:
            if cfg.replay:  # before the run exists: a wrong id leaves nothing behind
                try:
                    self.replay = ReplaySource(self.sessions, cfg.replay)
                except UnknownReplayRun as err:
                    raise RolloutError(str(err)) from None
            open_shared_run(self.sessions, lambda s: self._open_run(s, tasks, identity, fp), self.run_id)
            with self.sessions() as s:  # tasks that are synthesized QA pairs: their attempts get linked
                self.qa_links = qa_links.resolve(s, tasks)
            self.output_dir.mkdir(parents=True, exist_ok=True)
            update_latest(self.output_base, self.run_id)
            self.loop = ClaimLoop(self.sessions, self._write_lock, claims.KIND_ROLLOUT, self.run_id, self.owner,
                                  lease_s=cfg.claim_lease, workers=cfg.max_workers, stop=self.stop,
                                  on_claim=lambda s: reopen_run(s, RolloutRun, self.run_id))
            try:
                with Heartbeat(run_beat(self.sessions, self._write_lock, lambda s: get_run(s, self.run_id))), \
                        self.loop.heartbeat():
                    stopped = self._execute(len(tasks) * cfg.n_samples)
            except RolloutError as err:
                self._end((RUN_ERROR, str(err)))
                raise
            except KeyboardInterrupt:
                self._end((RUN_CANCELLED, "interrupted"))
                raise
            return self._end(stopped)
        finally:
            if self.cache is not None:
                self.cache.close()
            engine.dispose()

    def _execute(self, total: int) -> tuple[str, str] | None:
        """Work on the run until nothing is left; returns why this process stopped early
        (``(status, error)``), or ``None``."""
        cfg = self.cfg
        left = self.loop.outstanding()
        if not left.left:
            return None
        if self.cfg.resume or self.joined:
            log.info("%s run %s: %d of %d task samples left", "joining" if self.joined else "resuming",
                     self.run_id, left.left, total)
        # every model call of the run, the judge's too, goes through the model-call cache
        self.cache = ModelCache.open(self._db_url, cfg.cache, run_id=self.run_id)
        self.model = CachedChatModel(_make_model(cfg), self.cache, kind="agent")
        self.judge = CachedChatModel(_make_judge(cfg), self.cache, kind="judge") \
            if cfg.scoring and cfg.metric == "llm_judge" else None
        self.settings = _settings(cfg)
        sandboxes = self._open_sandboxes(cfg.max_workers)
        self._store_tool_specs()
        slots: queue.SimpleQueue[Sandbox] = queue.SimpleQueue()
        for sb in sandboxes:
            slots.put(sb)
        bar = _progress_bar(total, total - left.left, cfg.benchmark_name, disable=not self.progress)
        self._counts = {"done": 0, "correct": 0.0, "failed": 0, "infra": 0}
        self._streak = FatalStreak("requests")

        def show(outcome: tuple[str, Score | None]) -> None:
            bar.update(1)
            postfix = self._postfix(outcome)
            if not bar.disable:  # formatting the postfix of a hidden bar cost more than the rest of this
                bar.set_postfix(postfix, refresh=False)

        try:
            self.loop.run(lambda claim: self._one(claim, slots), show)
        except KeyboardInterrupt:
            log.warning("interrupted: in-flight tasks were stopped (they are not recorded)")
            raise
        finally:
            bar.close()
            self._close_sandboxes(sandboxes)
        if self._streak.message:
            log.debug("%s", self._streak.message)
            return RUN_ERROR, self._streak.message
        return None

    def _store_tool_specs(self) -> None:
        """Keep the tool schemas offered to the model in the run's spec (``spec["tools"]``),
        so a training export can give them with each trajectory. The first process to
        discover them writes them; one offered other schemas (the server changed between
        a run and its resume) logs it and keeps the first, as the fingerprint holds the
        tool names but not their schemas."""
        specs = self.toolbox.specs
        with self._write_lock, self.sessions() as session:
            run = get_run(session, self.run_id)
            stored = (run.spec or {}).get("tools")
            if stored is None:
                run.spec = {**(run.spec or {}), "tools": specs}  # a new dict: the JSON column sees the change
                session.commit()
            elif stored != specs:
                log.warning("run %s: the sandbox now offers other tool schemas than those stored at its start; "
                            "the stored ones are kept", self.run_id)

    def _note_fatal(self, result: AgentResult) -> None:
        """Count identical fatal model errors in a row; at :data:`FATAL_REPEAT` stop the run."""
        if result.status == ATTEMPT_INFRA_ERROR and not result.fatal:
            return  # a passing outage (timeouts, 5xx) neither counts nor resets
        if not result.fatal:
            self._streak.reset()
        elif self._streak.failed(error_signature(result.error), error_reason(result.status, result.error),
                                 resume_command(self.run_id)):
            self.stop.set()

    def _postfix(self, outcome: tuple[str, Score | None]) -> dict:
        status, score = outcome
        c = self._counts
        c["done"] += 1
        if status != ATTEMPT_COMPLETED:
            c["failed"] += 1
        if status == ATTEMPT_INFRA_ERROR:
            c["infra"] += 1
        if score is not None and score.value is not None:
            c["correct"] += score.value
        post = {"failed": c["failed"]}
        if self.cfg.scoring:
            post["acc"] = f"{c['correct'] / c['done']:.3f}"
        return post

    def _worker_id(self, slot: str) -> str:
        return worker_name("ro", self.run_id, self.tag, slot)

    def _open_sandboxes(self, workers: int) -> list[Sandbox]:
        """One sandbox worker per task slot, named for this process (``ro-<run>-<tag>-w<slot>``):
        processes working on one run never share a session, and a resumed run never meets
        the sessions a killed process left behind. The workers share one pool of
        kept-alive connections (one health check, no connection set up per slot)."""
        cfg = self.cfg
        sandboxes: list[Sandbox] = []
        try:
            first = Sandbox(cfg.sandbox_server_url, worker_id=self._worker_id("w0"), timeout=cfg.sandbox_timeout,
                            auto_start_server=cfg.sandbox_auto_start, config_path=cfg.sandbox_config_path,
                            pool_maxsize=max(64, workers + 4))
            sandboxes.append(first)
            first.start_sync()
            self.toolbox = _discover(first, cfg.available_tools)
            for i in range(1, workers):
                sandboxes.append(first.as_worker(self._worker_id(f"w{i}")).start_sync())
        except SandboxError as err:
            self._close_sandboxes(sandboxes)
            raise RolloutError(f"cannot use the sandbox server at {cfg.sandbox_server_url}: {err}") from err
        except BaseException:
            self._close_sandboxes(sandboxes)
            raise
        return sandboxes

    @staticmethod
    def _close_sandboxes(sandboxes: list[Sandbox]) -> None:
        for sb in reversed(sandboxes):  # the first one may own an auto-started server: close it last
            try:
                sb.close_sync()
            except SandboxError:
                pass

    def _one(self, claim: claims.Claimed, slots: queue.SimpleQueue) -> tuple[str, Score | None] | None:
        """Run, score and store one claimed task sample; ``None`` when the run is
        stopping or the claim was lost (nothing stored). A try whose sandbox node was
        lost is stored as an ``infra_error`` attempt and the task is tried again at once
        on a fresh session, up to ``max_attempts`` tries."""
        if self.stop.is_set():
            return None
        task, sample = self.tasks[claim.item], claim.sample
        slot = slots.get()
        try:
            for n in range(1, self.cfg.max_attempts + 1):
                sandbox = slot if n == 1 else self._fresh_sandbox(slot, n)
                try:
                    result, trace_id = self._attempt(task, sandbox, sample)
                finally:
                    if sandbox is not slot:
                        sandbox.close_sync()
                if result is None or (self.stop.is_set() and result.status == ATTEMPT_INFRA_ERROR):
                    return None
                retry = result.node_lost and n < self.cfg.max_attempts
                if not retry:
                    self._note_fatal(result)
                score = self._score(task, result)
                if not self._store(claim, task, result, score, trace_id, sandbox.worker_id, done=not retry):
                    return None
                if not retry:
                    return result.status, score
                log.warning("task %s#%d: its sandbox node was lost (%s); trying again on a fresh session "
                            "(try %d of %d)", task.id, sample, result.error, n + 1, self.cfg.max_attempts)
        finally:
            slots.put(slot)
        return None  # not reached: the last try always returns

    def _fresh_sandbox(self, slot: Sandbox, n: int) -> Sandbox:
        """A sandbox worker of its own for try ``n``: its sessions are new ones (placed on
        a live node), never the lost ones of the slot's worker."""
        return slot.as_worker(f"{slot.worker_id}-r{n}")

    def _attempt(self, task: Task, sandbox: Sandbox, sample: int) -> tuple[AgentResult | None, str]:
        trace_id = f"tr-{uuid.uuid4().hex}"
        try:
            # the sample index is part of every cache key: sample 2 is never served sample 1's answer
            replay = self.replay.for_task(task.id, sample) if self.replay is not None else None
            return run_agent(task, self.model.scoped(sample=sample), sandbox, self.toolbox, self.settings,
                             trace_id=trace_id, stop=self.stop, sessionless=self._sessionless,
                             replay=replay), trace_id
        except Cancelled:
            return None, trace_id
        except Exception as err:  # boundary: a bug must not kill the run; the attempt is retried on resume
            log.exception("task %s failed unexpectedly", task.id)
            return AgentResult(status=ATTEMPT_INFRA_ERROR, error=f"unexpected {type(err).__name__}: {err}"), trace_id

    def _store(self, claim: claims.Claimed, task: Task, result: AgentResult, score: Score | None, trace_id: str,
               worker_id: str, *, done: bool) -> bool:
        """Store one attempt and (``done``) end its claim, in one transaction, only while
        this process still holds the claim; False when it was taken over (nothing stored)."""
        with self._write_lock, self.sessions() as s:
            try:
                attempt = claims.fence(s, claim.id, self.owner, done=done, lease_s=self.cfg.claim_lease)
            except claims.ClaimLost:
                s.rollback()
                log.warning("task %s#%d was taken over by another process after this one's claim expired; "
                            "its result here is dropped", task.id, claim.sample)
                return False
            attempt_id = add_attempt(s, run_id=self.run_id, task=task, sample_index=claim.sample, attempt=attempt,
                                     result=result, score=score,
                                     metric=self.cfg.metric if self.cfg.scoring else None,
                                     trace_id=trace_id, worker_id=worker_id)
            if task.id in self.qa_links:
                qa_links.link(s, self.qa_links[task.id], self.run_id, attempt_id, task.id)
            s.commit()
        return True

    def _score(self, task: Task, result: AgentResult) -> Score | None:
        if not self.cfg.scoring:
            return None
        if result.status != ATTEMPT_COMPLETED:
            return Score(0.0, {"reason": f"no answer ({result.status})"})
        return score_prediction(self.cfg.metric, result.prediction, task.answers, question=task.question,
                                judge=self.judge)

    # ------------------------------------------------------------------ the end

    def _end(self, stopped: tuple[str, str] | None) -> dict:
        """End this process's part of the run and return the summary.

        With the run's row locked (so two processes ending at once take turns): if the
        run is still running and no other process holds a live claim, this process is the
        last one: it sets the final status and writes the summary and files. Otherwise the
        summary is the stored one (another process ended the run) or a live one (others
        still work on it; the last of them ends it).
        """
        cfg = self.cfg
        with self._write_lock, self.sessions() as s:
            run = s.get(RolloutRun, self.run_id, with_for_update=True)
            left = claims.outstanding(s, claims.KIND_ROLLOUT, self.run_id, self.owner)
            if run.status != RUN_RUNNING and run.summary:
                s.commit()
                return {**run.summary, "status": effective_status(run), "error": run.error}
            if run.status == RUN_RUNNING and left.live_others:
                s.commit()
                return self._live_summary(s, run, stopped)
            status, error = stopped or self._final_status(s, left)
            touch_run(run, status=status, error=error, finished_at=utcnow(), heartbeat_at=utcnow(),
                      output_dir=str(self.output_dir))
            s.flush()
            summary = export_run(s, self.run_id, self.output_dir, results=cfg.save_results,
                                 trajectories=cfg.save_results and cfg.save_trajectories,
                                 summary_file=cfg.save_summary)
            run.summary = summary
            s.commit()
        return summary

    def _final_status(self, session, left: claims.Outstanding) -> tuple[str, str | None]:
        """The run's status from every process's attempts."""
        infra = sum(1 for a in latest_attempts(session, self.run_id).values() if a.status == ATTEMPT_INFRA_ERROR)
        if infra:
            return RUN_ERROR, (f"{infra} task(s) failed for infrastructure reasons; fix the cause, then resume to "
                               f"retry them: {resume_command(self.run_id)}")
        if left.claimable:  # released by a process that stopped while this one was ending
            return RUN_ERROR, (f"{left.claimable} task sample(s) were not run; resume to run them: "
                               f"{resume_command(self.run_id)}")
        return RUN_SUCCESS, None

    def _live_summary(self, session, run: RolloutRun, stopped: tuple[str, str] | None) -> dict:
        """The summary of a run that others still work on, as this process leaves it."""
        summary = summarize(run, list(latest_attempts(session, self.run_id).values()))
        if stopped:
            summary["status"], summary["error"] = stopped
        summary.update(results_file=None, trajectories_file=None, summary_file=None)
        return summary


def _still_running(run: RolloutRun) -> bool:
    """Another live process runs this run (its heartbeat is fresh, or its pid is alive here)."""
    if run.status != RUN_RUNNING or run.pid == os.getpid() and run.host == process_identity()["host"]:
        return False
    return effective_status(run) == RUN_RUNNING and process_alive(run.pid, run.host) is not False \
        and run.heartbeat_at is not None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _progress_bar(total: int, initial: int, desc: str, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="task", disable=disable, dynamic_ncols=True)
