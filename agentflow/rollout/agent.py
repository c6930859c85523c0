"""The agent loop: one task, one model, tools through the sandbox client.

Each turn sends the conversation and the tool list to the model. Every tool call of a
reply is executed (in order) and answered with its own ``tool`` message; a call to an
unknown tool, or with arguments that are not a JSON object, or that the server rejects,
is answered with the error as text so the model can correct itself. The first reply
without tool calls ends the task; its ``<answer>…</answer>`` or ``Final Answer:`` part
is the prediction. Infrastructure failures (sandbox unreachable, model still failing
after retries) end the task with ``infra_error`` so a resumed run tries it again; so does
a session whose sandbox node was lost (1003 with ``data.node_lost``), flagged
``node_lost`` so the runner retries the task at once on a fresh session.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import json
import logging
import re
import threading
import time
from typing import Any

from ..db.base import utcnow
from ..db.rollout import (
    ATTEMPT_COMPLETED,
    ATTEMPT_ERROR,
    ATTEMPT_INFRA_ERROR,
    ATTEMPT_MAX_TURNS,
    ATTEMPT_TIMEOUT,
)
from ..llm import ChatModel, LLMAuthError, LLMBadRequestError, LLMError, LLMTimeoutError, Usage
from ..sandbox import Sandbox, SandboxError, SandboxRequestError, SandboxTimeoutError
from .tasks import Task

__all__ = ["AgentResult", "Cancelled", "NODE_LOST_PREFIX", "REPLAY_PREFIX", "TIMING_KEYS", "ToolBox",
           "discover_tools", "extract_answer", "is_node_lost", "run_agent", "split_timing"]

log = logging.getLogger(__name__)

_SEPARATORS = ("-", "_", ".", "/")

NODE_LOST_PREFIX = "sandbox node lost"
"""How the error of an attempt whose session's node was lost begins."""

REPLAY_PREFIX = "replay mismatch"
"""How the error of an attempt begins whose tool call differs from the replayed run's."""

TIMING_KEYS = frozenset({"duration_ms", "elapsed_ms", "capture_ms", "startup_ms", "execution_time_ms",
                         "latency_ms", "build_seconds"})
"""Fields of a tool result that measure time. They are kept out of what the model is
shown (so the same task and tool results make the same requests, and the model-call
cache can answer them) and stored in ``rollout_tool_calls.result_meta`` instead."""


def split_timing(data: Any, path: str = "") -> tuple[Any, dict]:
    """``data`` without its :data:`TIMING_KEYS` (at any depth), and those fields by
    dotted path (``{"duration_ms": 12.5}``, ``{"results.0.elapsed_ms": 3.1}``)."""
    meta: dict[str, Any] = {}
    if isinstance(data, dict):
        out = {}
        for k, v in data.items():
            where = f"{path}{k}"
            if k in TIMING_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool):
                meta[where] = v
                continue
            out[k], inner = split_timing(v, where + ".")
            meta.update(inner)
        return out, meta
    if isinstance(data, list):
        out_list = []
        for i, v in enumerate(data):
            item, inner = split_timing(v, f"{path}{i}.")
            out_list.append(item)
            meta.update(inner)
        return out_list, meta
    return data, meta


class Cancelled(Exception):
    """The run is stopping (Ctrl-C); the task is abandoned and recorded nowhere."""


class ToolDiscoveryError(Exception):
    """The server's tool list does not offer what ``available_tools`` asks for."""


@dataclasses.dataclass
class ToolBox:
    """The tools offered to the model, and how to map a function name back to a tool."""

    specs: list[dict]
    """OpenAI ``tools`` entries."""
    actions: dict[str, str]
    """Every accepted spelling (lower case) → the server's tool name (``bash:run``)."""
    param_names: dict[str, set[str]]
    """Server tool name → the parameter names its schema declares."""
    stateless: set[str] = dataclasses.field(default_factory=set)
    """Resources the server marks as needing no session (``needs_session: false`` on
    every tool); rollout opens no session for them."""

    def resolve(self, name: str) -> str | None:
        return self.actions.get((name or "").strip().lower())

    @property
    def names(self) -> list[str]:
        return [s["function"]["name"] for s in self.specs]

    def for_task(self, kwargs: dict) -> list[dict]:
        """The specs offered for a task with these ``kwargs``: see :func:`task_tool_specs`."""
        return task_tool_specs(self.specs, kwargs)


def task_tool_specs(specs: list[dict], kwargs: dict) -> list[dict]:
    """``specs`` with the task's ``kwargs`` removed from the parameters (they are filled
    in by rollout, so the model need not, and cannot, choose them). The training export
    rebuilds what a task was offered with it from the run's stored specs."""
    if not kwargs:
        return specs
    out = []
    for spec in specs:
        params = spec["function"].get("parameters") or {}
        props = params.get("properties") or {}
        hidden = set(kwargs) & set(props)
        if not hidden:
            out.append(spec)
            continue
        params = {**params, "properties": {k: v for k, v in props.items() if k not in hidden}}
        if "required" in params:
            params["required"] = [r for r in params["required"] if r not in hidden]
        out.append({**spec, "function": {**spec["function"], "parameters": params}})
    return out


def _spellings(full_name: str) -> list[str]:
    names = [full_name]
    if ":" in full_name:
        names += [full_name.replace(":", sep, 1) for sep in _SEPARATORS]
    return [n.lower() for n in names]


def discover_tools(sandbox: Sandbox, patterns: list[str]) -> ToolBox:
    """Fetch the server's tools and keep those matching ``patterns``.

    A pattern is a tool name in any spelling the server accepts (``rag:search``,
    ``rag-search``, ``rag_search``) or a wildcard (``rag:*``, ``*``). Hidden tools (e.g.
    ``diag:*``) are offered only when a pattern other than ``*`` names them. No patterns
    means every visible tool.

    Raises:
        ToolDiscoveryError: a pattern matches no tool; the message lists the server's tools.
        SandboxError: the server could not be asked.
    """
    plain = sandbox.list_tools_sync(include_hidden=True)["data"]["tools"]
    ready = sandbox.list_tools_sync(include_hidden=True, format="openai")["data"]["tools"]
    by_openai_name = {t["function"]["name"]: t for t in ready}
    wanted = [p.strip().lower() for p in patterns if p.strip()]
    chosen: list[dict] = []
    matched: set[str] = set()
    for tool in plain:
        spellings = _spellings(tool["name"])
        hits = [p for p in wanted if any(fnmatch.fnmatchcase(s, p) for s in spellings)]
        if wanted and not hits:
            continue
        if tool.get("hidden") and not any(p != "*" for p in hits):
            continue
        matched.update(hits)
        chosen.append(tool)
    missing = [p for p in wanted if p not in matched]
    if missing:
        visible = sorted(t["name"] for t in plain if not t.get("hidden"))
        raise ToolDiscoveryError(f"available_tools {missing} match(es) no tool on the sandbox server; "
                                 f"its tools: {', '.join(visible)}")
    specs, actions, params = [], {}, {}
    for tool in chosen:
        # the server's OpenAI name is the first alias (mcp:srv.tool is offered as mcp-srv_tool)
        openai_name = next((a for a in [*tool.get("aliases", [])[:1], tool["name"].replace(":", "-", 1)]
                            if a in by_openai_name), tool["name"].replace(":", "-", 1))
        spec = by_openai_name.get(openai_name) or {
            "type": "function",
            "function": {"name": openai_name, "description": tool.get("description", ""),
                         "parameters": tool.get("parameters") or {"type": "object", "properties": {}}},
        }
        specs.append(spec)
        for alias in _spellings(tool["name"]) + [a.lower() for a in tool.get("aliases", [])]:
            actions[alias] = tool["name"]
        params[tool["name"]] = set(((tool.get("parameters") or {}).get("properties") or {}).keys())
    flags: dict[str, set[bool]] = {}
    for tool in plain:
        for key in ("needs_session", "uses_sessions"):
            if key in tool:
                flags.setdefault(tool["name"].split(":", 1)[0], set()).add(bool(tool[key]))
    stateless = {resource for resource, seen in flags.items() if seen == {False}}
    return ToolBox(specs=specs, actions=actions, param_names=params, stateless=stateless)


_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_FINAL = re.compile(r"final\s+answer\s*\**\s*[:：]", re.I)


def extract_answer(text: str | None) -> str:
    """The prediction in a final reply: the last ``<answer>…</answer>``, else the text
    after the last ``Final Answer:`` (up to a blank line), else the whole reply."""
    if not text:
        return ""
    tags = _ANSWER_TAG.findall(text)
    if tags:
        return tags[-1].strip()
    finals = list(_FINAL.finditer(text))
    if finals:
        rest = text[finals[-1].end():].strip().strip("*").strip()
        return re.split(r"\n\s*\n", rest, maxsplit=1)[0].strip()
    return text.strip()


@dataclasses.dataclass
class AgentResult:
    """Everything one attempt produced; stored as one attempt with its messages and calls."""

    status: str
    prediction: str | None = None
    final_response: str | None = None
    error: str | None = None
    turns: int = 0
    messages: list[dict] = dataclasses.field(default_factory=list)
    """Message records: the OpenAI message plus ``turn``, token and latency fields."""
    tool_calls: list[dict] = dataclasses.field(default_factory=list)
    usage: Usage = dataclasses.field(default_factory=Usage)
    model_ms: float = 0.0
    tool_ms: float = 0.0
    started_at: dt.datetime = dataclasses.field(default_factory=utcnow)
    finished_at: dt.datetime = dataclasses.field(default_factory=utcnow)
    duration_ms: float = 0.0
    node_lost: bool = False
    """A tool call found its session's sandbox node lost (code 1003 with
    ``data.node_lost``): the session and its state are gone, so the task cannot go on
    there; the runner keeps this attempt (``infra_error``) and tries the task again on a
    fresh session."""
    model_calls: int = 0
    """Chat completions received (cache hits included)."""
    cache_hits: int = 0
    """Of ``model_calls``, those the model-call cache answered; their tokens are not in
    ``usage`` (nothing was paid)."""
    fatal: bool = False
    """The model endpoint refused the request in a way no other task will get past
    (wrong key, unknown model, a malformed request): the runner stops the run after a
    few identical ones (see ``agentflow.rollout.runner.FATAL_REPEAT``)."""


@dataclasses.dataclass
class AgentSettings:
    system_prompt: str = ""
    max_turns: int = 20
    max_tool_output_chars: int = 8000
    task_timeout: float | None = None
    request_timeout: float | None = None


class _Sessions:
    """Opens one sandbox session per resource on first use (so ``cd`` or Python
    variables persist within a task) and closes them when the task ends."""

    def __init__(self, sandbox: Sandbox, sessionless: set[str]):
        self.sandbox = sandbox
        self.sessionless = sessionless
        """Resources that refused a session (shared by the run's tasks: asked once)."""
        self.opened: list[str] = []

    def ensure(self, action: str) -> None:
        resource = action.split(":", 1)[0]
        if resource in self.opened or resource in self.sessionless:
            return
        try:
            self.sandbox.create_session_sync(resource)
            self.opened.append(resource)
        except SandboxRequestError:
            self.sessionless.add(resource)

    def close(self) -> None:
        for resource in self.opened:
            try:
                self.sandbox.destroy_session_sync(resource)
            except SandboxError as err:
                log.debug("could not destroy %s session of %s: %s", resource, self.sandbox.worker_id, err)
        self.opened.clear()


def run_agent(
    task: Task,
    model: ChatModel,
    sandbox: Sandbox | None,
    toolbox: ToolBox,
    settings: AgentSettings,
    *,
    trace_id: str,
    stop: threading.Event | None = None,
    sessionless: set[str] | None = None,
    replay: Any = None,
) -> AgentResult:
    """Run the agent on ``task`` and return what happened (never raises for task or
    infrastructure failures; those are the result's ``status``).

    ``replay`` (a :class:`agentflow.rollout.replay.RecordedCalls`) answers the tool calls
    from a recorded run instead of the sandbox: see :mod:`agentflow.rollout.replay`.

    Raises:
        Cancelled: ``stop`` was set; the partial attempt is to be discarded.
    """
    loop = _Loop(task, model, sandbox, toolbox, settings, trace_id, stop, sessionless)
    loop.replay = replay
    try:
        return loop.run()
    finally:
        if loop.sessions is not None:
            loop.sessions.close()


def is_node_lost(err: SandboxRequestError) -> bool:
    """The server's answer for a session whose node died: code 1003 with ``data.node_lost``."""
    return err.code == 1003 and isinstance(err.data, dict) and err.data.get("node_lost") is True


def is_fatal_model_error(err: LLMError) -> bool:
    """A refusal that the next request will get too: 401/403 (key), 404 (model not
    served) and 400/422 (the request itself). Rate limits, 5xx and timeouts are not."""
    return isinstance(err, (LLMAuthError, LLMBadRequestError))


class _Loop:
    def __init__(self, task, model, sandbox, toolbox, settings, trace_id, stop, sessionless):
        self.task, self.model, self.sandbox, self.toolbox = task, model, sandbox, toolbox
        self.settings, self.trace_id, self.stop = settings, trace_id, stop
        skip = (sessionless if sessionless is not None else set())
        skip.update(toolbox.stateless)
        self.sessions = _Sessions(sandbox, skip) if sandbox is not None else None
        self.result = AgentResult(status=ATTEMPT_ERROR)
        self.start = time.monotonic()
        self.deadline = self.start + settings.task_timeout if settings.task_timeout else None
        self.conversation: list[dict] = []
        self.replay = None

    def _remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def _check(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise Cancelled()

    def _add(self, message: dict, turn: int, **extra: Any) -> None:
        self.conversation.append(message)
        self.result.messages.append({**message, "turn": turn, **extra})

    def _finish(self, status: str, error: str | None = None) -> AgentResult:
        r = self.result
        r.status, r.error = status, error
        r.finished_at = utcnow()
        r.duration_ms = (time.monotonic() - self.start) * 1000
        return r

    def run(self) -> AgentResult:
        s = self.settings
        if s.system_prompt:
            self._add({"role": "system", "content": s.system_prompt}, 0)
        self._add({"role": "user", "content": self.task.question}, 0)
        tools = self.toolbox.for_task(self.task.kwargs) or None
        for turn in range(1, s.max_turns + 1):
            self._check()
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                return self._finish(ATTEMPT_TIMEOUT, f"task_timeout of {s.task_timeout:g} s reached")
            timeout = min(x for x in (s.request_timeout, remaining) if x is not None) \
                if (s.request_timeout or remaining) else None
            t0 = time.perf_counter()
            try:
                reply = self.model.chat(self.conversation, tools=tools, timeout=timeout)
            except LLMError as err:
                self.result.model_ms += (time.perf_counter() - t0) * 1000
                if isinstance(err, LLMTimeoutError) and self._remaining() is not None and self._remaining() <= 0:
                    return self._finish(ATTEMPT_TIMEOUT, f"task_timeout of {s.task_timeout:g} s reached")
                # every model failure is an infrastructure failure of the run (the task was
                # never really attempted): it makes the run ``error`` and resume retries it
                self.result.fatal = is_fatal_model_error(err)
                return self._finish(ATTEMPT_INFRA_ERROR, f"{type(err).__name__}: {err}")
            self.result.model_ms += (time.perf_counter() - t0) * 1000
            self.result.model_calls += 1
            if getattr(reply, "cache_hit", False):  # answered by the model-call cache: nothing paid
                self.result.cache_hits += 1
            else:
                self.result.usage += reply.usage
            self.result.turns = turn
            self._add(reply.to_message(), turn, prompt_tokens=reply.usage.prompt_tokens,
                      completion_tokens=reply.usage.completion_tokens,
                      cached_prompt_tokens=reply.usage.cached_prompt_tokens, latency_ms=reply.latency_ms,
                      finish_reason=reply.finish_reason, cache_hit=bool(getattr(reply, "cache_hit", False)))
            if not reply.tool_calls:
                self.result.final_response = reply.content or ""
                self.result.prediction = extract_answer(reply.content)
                return self._finish(ATTEMPT_COMPLETED)
            for call in reply.tool_calls:
                self._check()
                infra = self._tool_call(call, turn)
                if infra:
                    return self._finish(ATTEMPT_INFRA_ERROR, infra)
        return self._finish(ATTEMPT_MAX_TURNS, f"no final answer after max_turns={s.max_turns}")

    def _tool_call(self, call, turn: int) -> str | None:
        """Execute one call and answer it; returns an error text on an infrastructure failure."""
        record: dict[str, Any] = {"turn": turn, "call_id": call.id, "name": call.name, "action": None,
                                  "arguments": call.arguments, "params": None, "code": None, "error": None,
                                  "result": None, "duration_ms": 0.0, "trace_id": self.trace_id,
                                  "request_id": None, "session_id": None}
        self.result.tool_calls.append(record)
        action = self.toolbox.resolve(call.name)
        if action is None:
            text = (f"Error: unknown tool '{call.name}'. Available tools: "
                    f"{', '.join(self.toolbox.names) or '(none)'}.")
            return self._answer(call, record, text, error=text)
        record["action"] = action
        try:
            args = call.parse_arguments()
        except ValueError as err:
            text = f"Error: could not call '{call.name}': {err}. Send the arguments as one JSON object."
            return self._answer(call, record, text, error=text)
        injected = {k: v for k, v in self.task.kwargs.items() if k in self.toolbox.param_names.get(action, ())}
        params = {**args, **injected}
        record["params"] = params
        if self.replay is not None:
            return self._replayed(call, record, action, params)
        if self.sandbox is None:
            return "no sandbox configured"
        remaining = self._remaining()
        t0 = time.perf_counter()
        try:
            self.sessions.ensure(action)
            env = self.sandbox.execute_sync(action, params, timeout=remaining if remaining and remaining > 0 else None,
                                            trace_id=self.trace_id)
        except SandboxRequestError as err:  # unknown tool, bad parameter, session error: the model can fix it
            record["duration_ms"] = (time.perf_counter() - t0) * 1000
            self.result.tool_ms += record["duration_ms"]
            record["code"], record["request_id"] = err.code, err.request_id
            if is_node_lost(err):  # not the model's doing, nor fixable by it: the task restarts elsewhere
                record["error"] = record["result"] = f"Error {err.code}: {err.message}"
                self.result.node_lost = True
                return f"{NODE_LOST_PREFIX} on {action}: [{err.code}] {err.message}"
            data, timing = split_timing(err.data)
            record["result_meta"] = timing or None
            text = f"Error {err.code}: {err.message}"
            if data:
                text += "\n" + _dump(data)
            return self._answer(call, record, text, error=text)
        except SandboxTimeoutError as err:
            record["duration_ms"] = (time.perf_counter() - t0) * 1000
            self.result.tool_ms += record["duration_ms"]
            text = f"Error: the tool call got no answer in time ({err.message})"
            return self._answer(call, record, text, error=text)
        except SandboxError as err:
            record["duration_ms"] = (time.perf_counter() - t0) * 1000
            self.result.tool_ms += record["duration_ms"]
            record["error"] = f"{type(err).__name__}: {err}"
            return f"sandbox failure on {action}: {type(err).__name__}: {err}"
        record["duration_ms"] = (time.perf_counter() - t0) * 1000
        self.result.tool_ms += record["duration_ms"]
        meta = env.get("meta") or {}
        record["code"], record["request_id"] = env.get("code"), meta.get("request_id")
        record["session_id"] = meta.get("session_id")
        # timing fields are metadata of the result, not part of it: kept in the database,
        # out of the prompt (or no second run of the task would send the same requests)
        data, timing = split_timing(env.get("data"))
        record["result_meta"] = timing or None
        if env.get("code") == 0:
            text = _dump(data)
        else:
            text = f"Error {env.get('code')}: {env.get('message', '')}"
            if data:
                text += "\n" + _dump(data)
            record["error"] = env.get("message")
        return self._answer(call, record, text)

    def _replayed(self, call, record: dict, action: str, params: dict) -> str | None:
        """Answer the call with the recorded run's result at this position; a call that
        differs from the recorded one ends the attempt (returns the error)."""
        from .replay import ReplayMismatch

        try:
            rec = self.replay.next(action, params)
        except ReplayMismatch as err:
            record["error"] = f"{REPLAY_PREFIX}: {err}"
            return f"{REPLAY_PREFIX}: {err}"
        record.update(code=rec["code"], request_id=rec["request_id"], session_id=rec["session_id"],
                      result_meta=rec["result_meta"], replayed=True)
        return self._answer(call, record, rec["result"], error=rec["error"])

    def _answer(self, call, record: dict, text: str, error: str | None = None) -> None:
        record["result"] = text
        record["result_chars"] = len(text)
        if error is not None:
            record["error"] = error
        cap = self.settings.max_tool_output_chars
        shown = text
        if len(text) > cap:
            shown = text[:cap] + f"\n[output truncated: showing {cap} of {len(text)} characters]"
        record["prompt_truncated"] = len(text) > cap
        self._add({"role": "tool", "tool_call_id": call.id, "content": shown}, record["turn"])
        return None


def _dump(data: Any) -> str:
    if isinstance(data, str):
        return data
    return json.dumps(data, ensure_ascii=False, default=str)
