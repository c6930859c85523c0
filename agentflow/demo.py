"""``agentflow demo``: the whole system end to end on one machine, offline by default.

:func:`run_demo` starts (or uses) a sandbox server and a model, runs a rollout on a few
tasks of the shipped ``rag`` benchmark and a small synthesis on the shipped ``rag``
seeds, and returns what a user needs next: both summaries, the output files, the
database, and SQL queries over it. Everything it started is stopped before it returns.

By default the model is an embedded one (``agentflow model serve``, the ``local`` extra;
``local_model`` chooses which); with ``base_url`` and ``model`` it is any
OpenAI-compatible model.
The demo's data (database, indexes, logs, results) goes to its own folder, ``home``.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .config import REPO_DIR

__all__ = ["DemoError", "DemoOptions", "run_demo"]

log = logging.getLogger(__name__)


class DemoError(RuntimeError):
    """The demo cannot run (the model or the sandbox is missing or would not start); the
    message says what to install or fix."""


@dataclasses.dataclass
class DemoOptions:
    """What :func:`run_demo` does. The defaults finish in a few minutes on 2 CPU cores."""

    home: Path = Path(".agentflow-demo")
    """The demo's data folder: database, rag index, server logs, results."""
    base_url: str | None = None
    """An OpenAI-compatible endpoint to use instead of the local model."""
    model: str | None = None
    """Its model name (required with ``base_url``)."""
    api_key: str | None = None
    sandbox_url: str | None = None
    """A running sandbox server to use instead of starting one."""
    database_url: str | None = None
    """Where runs are stored; default: the demo's sqlite database, or with ``sandbox_url``
    the default of ``agentflow serve`` (so the join with its ``tool_calls`` works)."""
    tasks: int = 4
    """Tasks of ``benchmark/rag.jsonl`` to run."""
    seeds: int = 2
    """Seeds of ``seeds/rag/seeds.jsonl`` to explore."""
    max_turns: int = 4
    local_model: str | None = None
    """Which embedded model to run when there is no ``base_url`` (a key of
    :data:`~agentflow.localmodel.weights.LOCAL_MODELS`; default the default one)."""
    workers: int | None = None
    """Tasks (and seeds) run at once; default 1 with the local model, else 4 (2 seeds)."""
    startup_timeout: float = 180.0
    progress: bool = True


def _stamp() -> str:
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def run_demo(opts: DemoOptions, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo and return its result.

    Args:
        opts: What to run (see :class:`DemoOptions`).
        say: Receives one line of progress at a time.

    Returns:
        ``{"home", "database_url", "database_path", "model", "base_url", "rollout"
        (summary), "synthesis" (report), "queries" ([{title, sql}]), "counts",
        "timings"}``; also written to ``<home>/demo.json``.

    Raises:
        DemoError: the model or the sandbox server cannot be used.
    """
    from .localmodel import ChildServer, ModelServerProcess, ServerStartError, free_port, unavailable_reason
    from .localmodel.weights import find_gguf, local_model

    try:
        spec = local_model(opts.local_model)
    except ValueError as err:
        raise DemoError(str(err)) from None
    home = Path(opts.home).expanduser().resolve()
    (home / "logs").mkdir(parents=True, exist_ok=True)
    if opts.base_url and not opts.model:
        raise DemoError("--base-url needs --model (the model name at that endpoint)")
    if not opts.base_url:
        reason = unavailable_reason(model=spec.key)
        if reason:
            raise DemoError(f"the local model is not available: {reason}; or run the demo on another model with "
                            f"--base-url URL --model NAME [--api-key KEY]")
    timings: dict[str, float] = {}
    started: list[ChildServer] = []
    t_all = time.perf_counter()
    try:
        # ---------------------------------------------------------------- sandbox
        if opts.sandbox_url:
            sandbox_url = opts.sandbox_url.rstrip("/")
            database_url = opts.database_url
            say(f"sandbox server: using {sandbox_url}")
        else:
            port = free_port()
            sandbox_url = f"http://127.0.0.1:{port}"
            env = {k: v for k, v in os.environ.items() if k not in ("AGENTFLOW_CONFIG", "AGENTFLOW_DATABASE_URL")}
            env["AGENTFLOW_HOME"] = str(home)
            database_url = opts.database_url or f"sqlite:///{home / 'agentflow.db'}"
            if opts.database_url:
                env["AGENTFLOW_DATABASE_URL"] = opts.database_url
            say(f"sandbox server: starting on {sandbox_url} (data in {home})")
            t0 = time.perf_counter()
            server = ChildServer("sandbox server", [sys.executable, "-m", "agentflow.cli", "serve", "--host",
                                                    "127.0.0.1", "--port", str(port), "--workers", "2"],
                                 f"{sandbox_url}/health", env=env, log_dir=home / "logs")
            try:
                started.append(server.start(opts.startup_timeout))
            except ServerStartError as err:
                raise DemoError(str(err)) from err
            timings["sandbox_start_s"] = time.perf_counter() - t0
        _warm_rag(sandbox_url, say, timings)

        # ---------------------------------------------------------------- model
        if opts.base_url:
            base_url, model, api_key, local = opts.base_url, opts.model, opts.api_key, False
            say(f"model: {model} at {base_url}")
        else:
            say(f"model: starting the local model server ({spec.title} on the CPU)")
            t0 = time.perf_counter()
            # a fixed seed makes the demo repeatable on one machine
            server = ModelServerProcess(model_path=str(find_gguf(model=spec.key)), model_name=spec.name,
                                        log_dir=home / "logs", extra_args=["--seed", "0"])
            try:
                started.append(server.start(opts.startup_timeout))
            except ServerStartError as err:
                raise DemoError(str(err)) from err
            timings["model_start_s"] = time.perf_counter() - t0
            base_url, model, api_key, local = server.base_url, spec.name, "local", True
            info = server.health()
            timings["model_load_s"] = info.get("load_seconds") or 0.0
            say(f"model: {model} at {base_url} (weights loaded in {timings['model_load_s']:.2f} s)")

        # ---------------------------------------------------------------- rollout
        common = {"model_name": model, "base_url": base_url, "api_key": api_key or None,
                  "sandbox_server_url": sandbox_url, "database_url": database_url, "request_timeout": 600.0}
        stamp = _stamp()
        rollout_id, synth_id = f"demo-rag-{stamp}", f"demo-synth-{stamp}"
        say(f"\nrollout {rollout_id}: {opts.tasks} tasks of benchmark/rag.jsonl, up to {opts.max_turns} turns each")
        from .rollout import rollout

        t0 = time.perf_counter()
        summary = rollout(REPO_DIR / "configs/rollout/rag.json", progress=opts.progress, run_id=rollout_id,
                          output_dir=str(home / "results"), number_of_tasks=opts.tasks,
                          max_turns=opts.max_turns, max_workers=opts.workers or (1 if local else 4),
                          max_tool_output_chars=1500 if local else 8000, max_tokens=256 if local else None,
                          task_timeout=600.0, **common)
        timings["rollout_s"] = time.perf_counter() - t0

        # ---------------------------------------------------------------- synthesis
        # A 135M model rarely gets past one useful search, so with it one-hop paths count.
        hops = 1 if local else 2
        say(f"\nsynthesis {synth_id}: {opts.seeds} seed(s) of seeds/rag/seeds.jsonl, trees of depth 2, "
            f"QA from paths of {hops}+ step(s)")
        from .synthesis import synthesize

        t0 = time.perf_counter()
        report = synthesize(REPO_DIR / "configs/synthesis/rag.json", progress=opts.progress, run_id=synth_id,
                            output_dir=str(home / "results"), number_of_seed=opts.seeds,
                            max_depth=2, branching_factor=2, depth_threshold=1, min_depth=hops, min_hops=hops,
                            max_selected_traj=1, max_workers=opts.workers or (1 if local else 2), max_expansions_per_seed=1 if local else 2,
                            max_observation_chars=1200 if local else 4000, max_tokens=256 if local else None,
                            **common)
        timings["synthesis_s"] = time.perf_counter() - t0
        model_stats = started[-1].health().get("stats") if local else None
    finally:
        for server in reversed(started):
            say(f"stopping the {server.name}")
            server.stop()
    timings["total_s"] = time.perf_counter() - t_all
    url = database_url or _default_database_url()
    result = {
        "home": str(home), "database_url": url, "database_path": _sqlite_path(url), "model": model,
        "base_url": base_url, "sandbox_url": sandbox_url, "rollout": summary, "synthesis": report,
        "queries": queries(rollout_id, synth_id), "counts": _counts(url, rollout_id, synth_id),
        "timings": {k: round(v, 2) for k, v in timings.items()}, "model_stats": model_stats,
    }
    (home / "demo.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def _warm_rag(sandbox_url: str, say: Callable[[str], None], timings: dict) -> None:
    """Build the rag index now (once per data folder) so the first task does not wait."""
    from .sandbox import Sandbox, SandboxError

    t0 = time.perf_counter()
    try:
        with Sandbox(sandbox_url, worker_id="demo-warmup", timeout=600) as sb:
            env = sb.warmup_sync(["rag"])
    except SandboxError as err:
        raise DemoError(f"the sandbox server at {sandbox_url} cannot be used: {err}") from err
    if env.get("code") != 0:
        raise DemoError(f"the sandbox server could not load the rag backend: {env.get('message')} {env.get('data')}")
    timings["rag_warmup_s"] = time.perf_counter() - t0
    say(f"sandbox server: rag index ready in {timings['rag_warmup_s']:.1f} s")


def _default_database_url() -> str:
    from .config import load_server_config

    return load_server_config().effective_database_url


def _sqlite_path(url: str) -> str | None:
    return url[len("sqlite:///"):] if url.startswith("sqlite:///") else None


def queries(rollout_id: str, synth_id: str) -> list[dict[str, str]]:
    """Three SQL queries over the demo's runs (sqlite dialect)."""
    return [
        {"title": "each task: outcome, score, answer, and how many tool calls it made",
         "sql": ("SELECT a.task_id, a.status, a.score, a.tool_call_count AS calls, substr(a.prediction, 1, 60) AS "
                 f"prediction FROM rollout_attempts a WHERE a.run_id = '{rollout_id}' ORDER BY a.task_id;")},
        {"title": "every tool call of the rollout beside the sandbox server's audit row",
         "sql": ("SELECT a.task_id, c.turn, c.action, json_extract(c.params, '$.query') AS query, t.code, "
                 "round(t.duration_ms, 1) AS ms, t.result_size FROM rollout_attempts a "
                 "JOIN rollout_tool_calls c ON c.attempt_id = a.id JOIN tool_calls t ON t.request_id = c.request_id "
                 f"WHERE a.run_id = '{rollout_id}' ORDER BY c.id;")},
        {"title": "the synthesized QA pairs, accepted or rejected with the reason",
         "sql": ("SELECT s.seed_index, q.status, q.reason, q.question, q.answer FROM synthesis_qa q "
                 f"JOIN synthesis_seeds s ON s.id = q.seed_id WHERE q.run_id = '{synth_id}' ORDER BY q.id;")},
    ]


def _counts(url: str, rollout_id: str, synth_id: str) -> dict[str, int]:
    """Rows the demo left in the database (what the queries will find)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    sql = {
        "rollout_attempts": "SELECT count(*) FROM rollout_attempts WHERE run_id = :r",
        "rollout_tool_calls": ("SELECT count(*) FROM rollout_tool_calls c JOIN rollout_attempts a "
                               "ON a.id = c.attempt_id WHERE a.run_id = :r"),
        "audited_tool_calls": ("SELECT count(*) FROM tool_calls t JOIN rollout_tool_calls c ON c.request_id = "
                               "t.request_id JOIN rollout_attempts a ON a.id = c.attempt_id WHERE a.run_id = :r"),
        "synthesis_nodes": "SELECT count(*) FROM synthesis_nodes WHERE run_id = :s",
        "synthesis_qa": "SELECT count(*) FROM synthesis_qa WHERE run_id = :s",
    }
    try:
        with engine.connect() as conn:
            return {k: int(conn.execute(text(q), {"r": rollout_id, "s": synth_id}).scalar_one()) for k, q in sql.items()}
    except Exception as err:  # boundary: counts are a courtesy; the runs are stored either way
        log.warning("could not count the demo's rows in %s: %s", url, err)
        return {}
    finally:
        engine.dispose()
