"""Running a rollout: tasks × samples over a thread pool, each finished task committed
at once, resumable after a crash or Ctrl-C.

:func:`rollout` is the entry point. A run is a ``rollout_runs`` row keyed by ``run_id``
with the fingerprint of its identity (:func:`~agentflow.rollout.config.run_identity`);
resuming checks it, skips every task sample whose newest attempt is not an
infrastructure failure, and runs the rest. Each task slot of the pool has its own
sandbox ``worker_id`` (sessions opened by a task are closed when it ends).
"""
from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import logging
import os
import queue
import threading
import uuid
from pathlib import Path
from typing import Any

from ..config import ConfigError, load_server_config
from ..db import make_engine, make_session_factory, upgrade
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
from ..sandbox import Sandbox, SandboxError
from ..version import __version__
from .agent import AgentResult, AgentSettings, Cancelled, ToolBox, ToolDiscoveryError, discover_tools, run_agent
from .config import FINGERPRINT_VERSION, RolloutConfig, fingerprint, load_config, resolve_path, run_identity
from .metrics import Score, score_prediction
from ..runfiles import (FATAL_REPEAT, FatalStreak, Heartbeat, effective_status, process_alive,  # noqa: F401
                        process_identity, run_beat, run_output_dir, update_latest)
from .store import add_attempt, error_reason, error_signature, export_run, get_run, latest_attempts, touch_run
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
    """``resume`` was asked for a run whose configuration or dataset has changed since it
    started. Resuming would mix results of two different experiments, so it is refused;
    start a new run instead (or restore the original settings)."""


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
        FingerprintMismatch: resuming a run whose config or dataset changed.
        RolloutError: the run exists (without ``resume``), or the sandbox has no such tools.
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
    """One execution of a rollout config (a new run, or the rest of a resumed one)."""

    def __init__(self, cfg: RolloutConfig, *, progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        self.stop = threading.Event()
        self._write_lock = threading.Lock()
        self._sessionless: set[str] = set()

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
        cfg = self.cfg
        run = get_run(session, self.run_id)
        if run is None:
            if cfg.resume:
                raise RolloutError(f"no rollout run {self.run_id!r} to resume; leave out --resume to start it")
            run = RolloutRun(
                id=self.run_id, benchmark_name=cfg.benchmark_name, status=RUN_RUNNING, model_name=cfg.model_name,
                data_path=str(cfg.data_path), fingerprint=fp, fingerprint_version=FINGERPRINT_VERSION,
                total_tasks=len(tasks) * cfg.n_samples, output_dir=str(self.output_dir),
                heartbeat_at=utcnow(), **process_identity(),
                spec={"config": cfg.public_dict(), "identity": identity, "scoring": cfg.scoring,
                      "metric": cfg.metric if cfg.scoring else None, "agentflow_version": __version__,
                      "dataset": {"path": str(resolve_path(cfg.data_path, cfg)),
                                  "sha256": identity["dataset_sha256"], "task_ids": [t.id for t in tasks]}},
            )
            session.add(run)
            return run
        if not cfg.resume:
            raise RolloutError(f"rollout run {self.run_id!r} already exists; pass resume=True (--resume) to "
                               f"continue it, or choose another run_id")
        if _still_running(run):
            raise RolloutError(f"rollout run {self.run_id!r} is still running (pid {run.pid} on {run.host}); "
                               f"wait for it or stop that process first")
        stored = (run.spec or {}).get("identity") or {}
        if run.fingerprint != fp or run.fingerprint_version != FINGERPRINT_VERSION:
            changed = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
            details = "; ".join(f"{k}: {_short(stored.get(k))} -> {_short(identity.get(k))}" for k in changed)
            raise FingerprintMismatch(
                f"cannot resume run {self.run_id!r}: its configuration or dataset changed since it started "
                f"({details or 'fingerprint version changed'}). Restore the original settings, or start a new "
                f"run with another run_id.")
        touch_run(run, status=RUN_RUNNING, finished_at=None, error=None, output_dir=str(self.output_dir),
                  heartbeat_at=utcnow(), **process_identity())
        return run

    # ------------------------------------------------------------------ run

    def run(self) -> dict:
        cfg = self.cfg
        tasks = self._load_tasks()
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
        self.sessions = make_session_factory(engine)
        try:
            with self.sessions() as s:
                self._open_run(s, tasks, identity, fp)
                newest = latest_attempts(s, self.run_id)
                s.commit()
            self.output_dir.mkdir(parents=True, exist_ok=True)
            update_latest(self.output_base, self.run_id)
            todo = [(t, i, newest[(t.id, i)].attempt + 1 if (t.id, i) in newest else 1)
                    for t in tasks for i in range(cfg.n_samples)
                    if (t.id, i) not in newest or newest[(t.id, i)].status == ATTEMPT_INFRA_ERROR]
            total = len(tasks) * cfg.n_samples
            if cfg.resume:
                log.info("resuming run %s: %d of %d task samples to run", self.run_id, len(todo), total)
            try:
                with Heartbeat(run_beat(self.sessions, self._write_lock, lambda s: get_run(s, self.run_id))):
                    status, error = self._execute(todo, total - len(todo), total)
            except RolloutError as err:
                self._finish(RUN_ERROR, str(err))
                raise
            return self._finish(status, error)
        finally:
            engine.dispose()

    def _execute(self, todo: list[tuple[Task, int, int]], already: int, total: int) -> tuple[str, str | None]:
        if not todo:
            return RUN_SUCCESS, None
        cfg = self.cfg
        self.model = _make_model(cfg)
        self.judge = _make_judge(cfg) if cfg.scoring and cfg.metric == "llm_judge" else None
        self.settings = _settings(cfg)
        workers = min(cfg.max_workers, len(todo))
        sandboxes = self._open_sandboxes(workers)
        slots: queue.SimpleQueue[Sandbox] = queue.SimpleQueue()
        for sb in sandboxes:
            slots.put(sb)
        bar = _progress_bar(total, already, cfg.benchmark_name, disable=not self.progress)
        self._counts = {"done": 0, "correct": 0.0, "failed": 0, "infra": 0}
        self._streak = FatalStreak("requests")
        pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rollout")
        try:
            futures = [pool.submit(self._one, task, sample, attempt, slots) for task, sample, attempt in todo]
            for fut in cf.as_completed(futures):
                outcome = fut.result()
                if outcome is None:
                    continue
                bar.update(1)
                bar.set_postfix(self._postfix(outcome), refresh=False)
                if self._streak.message:
                    break
        except KeyboardInterrupt:
            self.stop.set()
            log.warning("interrupted: waiting for in-flight tasks to stop (they are not recorded)")
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
            self._close_sandboxes(sandboxes)
            self._finish(RUN_CANCELLED, "interrupted")
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
        self._close_sandboxes(sandboxes)
        if self._streak.message:
            log.debug("%s", self._streak.message)
            return RUN_ERROR, self._streak.message
        if self._counts["infra"]:
            return RUN_ERROR, (f"{self._counts['infra']} task(s) failed for infrastructure reasons; fix the cause, "
                               f"then resume to retry them: {resume_command(self.run_id)}")
        return RUN_SUCCESS, None

    def _note_fatal(self, result: AgentResult) -> None:
        """Count identical fatal model errors in a row; at :data:`FATAL_REPEAT` stop the run."""
        if result.status == ATTEMPT_INFRA_ERROR and not result.fatal:
            return  # a passing outage (timeouts, 5xx) neither counts nor resets
        with self._write_lock:
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

    def _open_sandboxes(self, workers: int) -> list[Sandbox]:
        cfg = self.cfg
        base = f"ro-{self.run_id[:150]}"
        sandboxes: list[Sandbox] = []
        try:
            for i in range(workers):
                sb = Sandbox(cfg.sandbox_server_url, worker_id=f"{base}-w{i}", timeout=cfg.sandbox_timeout,
                             auto_start_server=cfg.sandbox_auto_start and i == 0,
                             config_path=cfg.sandbox_config_path if i == 0 else None)
                sandboxes.append(sb)
                sb.start_sync()
                if i == 0:
                    self.toolbox = _discover(sb, cfg.available_tools)
                if cfg.resume:  # sessions a killed process left behind must not leak into new tasks
                    for sess in (sb.list_sessions_sync().get("data") or {}).get("sessions", []):
                        try:
                            sb.destroy_session_sync(sess["resource_type"])
                        except SandboxError:
                            pass
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

    def _one(self, task: Task, sample: int, attempt: int, slots: queue.SimpleQueue) -> tuple[str, Score | None] | None:
        """Run, score and store one attempt; ``None`` when the run is stopping."""
        if self.stop.is_set():
            return None
        sandbox = slots.get()
        trace_id = f"tr-{uuid.uuid4().hex}"
        try:
            try:
                result = run_agent(task, self.model, sandbox, self.toolbox, self.settings, trace_id=trace_id,
                                   stop=self.stop, sessionless=self._sessionless)
            except Cancelled:
                return None
            except Exception as err:  # boundary: a bug must not kill the run; the attempt is retried on resume
                log.exception("task %s failed unexpectedly", task.id)
                result = AgentResult(status=ATTEMPT_INFRA_ERROR, error=f"unexpected {type(err).__name__}: {err}")
        finally:
            slots.put(sandbox)
        if self.stop.is_set() and result.status == ATTEMPT_INFRA_ERROR:
            return None
        self._note_fatal(result)
        score = self._score(task, result)
        with self._write_lock, self.sessions() as s:
            add_attempt(s, run_id=self.run_id, task=task, sample_index=sample, attempt=attempt, result=result,
                        score=score, metric=self.cfg.metric if self.cfg.scoring else None, trace_id=trace_id,
                        worker_id=sandbox.worker_id)
            s.commit()
        return result.status, score

    def _score(self, task: Task, result: AgentResult) -> Score | None:
        if not self.cfg.scoring:
            return None
        if result.status != ATTEMPT_COMPLETED:
            return Score(0.0, {"reason": f"no answer ({result.status})"})
        return score_prediction(self.cfg.metric, result.prediction, task.answers, question=task.question,
                                judge=self.judge)

    def _finish(self, status: str, error: str | None) -> dict:
        cfg = self.cfg
        with self._write_lock, self.sessions() as s:
            run = get_run(s, self.run_id)
            touch_run(run, status=status, error=error, finished_at=utcnow(), heartbeat_at=utcnow())
            s.flush()
            summary = export_run(s, self.run_id, self.output_dir, results=cfg.save_results,
                                 trajectories=cfg.save_results and cfg.save_trajectories,
                                 summary_file=cfg.save_summary)
            run.summary = summary
            s.commit()
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
