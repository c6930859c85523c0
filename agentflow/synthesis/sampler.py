"""Tree exploration of one seed (SPEC §7.1).

From the root, a node at depth ``d`` gets ``branching_factor`` children while
``d < depth_threshold`` and one child after that, up to ``max_depth``. Every child is one
*expansion*: the model sees the path from the root (as its own earlier tool calls and
their results) and calls one sandbox tool, or ``stop_branch``. Expansions of different
nodes (siblings included) run concurrently on a small per-seed pool.

An action is the server tool plus its normalised parameters (:func:`action_key`). An
:class:`ActionRegistry` per seed tree refuses an action that is already done *or in
flight* in the tree; the model is told so and asked again (up to
``max_action_retries`` times). Each expansion is handed to ``save_node`` the moment it
is made (the runner commits it), and a resumed seed continues from its stored nodes.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import json
import logging
import threading
import time
from typing import Any, Callable

from ..db.base import utcnow
from ..db.synthesis import NODE_ACTION, NODE_FAILED, NODE_ROOT, NODE_STOP
from ..llm import ChatModel, LLMError
from ..sandbox import Sandbox, SandboxError, SandboxRequestError
from ..rollout.agent import split_timing
from .prompts import STOP_BRANCH, STOP_BRANCH_NAME, sampling_messages

__all__ = ["ActionRegistry", "ExplorationError", "Node", "TreeSampler", "action_key", "normalize_params"]

log = logging.getLogger(__name__)


class ExplorationError(Exception):
    """The model or the sandbox failed (after their own retries) while exploring a seed.
    The seed is recorded as ``error`` and continued on resume, reusing its stored nodes."""


def normalize_params(value: Any) -> Any:
    """Parameters in a canonical form: strings stripped, inner whitespace collapsed and
    case-folded, integral floats as ints, ``None`` values dropped, keys sorted, and a
    one-item list the same as its item (``urls: "x"`` equals ``urls: ["x"]``)."""
    if isinstance(value, dict):
        return {k: normalize_params(v) for k, v in sorted(value.items()) if v is not None}
    if isinstance(value, (list, tuple)):
        items = [normalize_params(v) for v in value]
        return items[0] if len(items) == 1 else items
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def action_key(action: str, params: dict | None) -> str:
    """sha256 of the tool and its normalised parameters: equal for the same action."""
    text = json.dumps([action, normalize_params(params or {})], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ActionRegistry:
    """The actions of one seed tree, in flight or done. Thread-safe."""

    IN_FLIGHT = "in_flight"
    DONE = "done"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, list[str]] = {}

    def claim(self, key: str, label: str) -> str | None:
        """Take ``key`` for a call about to run. Returns ``None`` when it is taken now, or
        the state of the same action already in the tree (``in_flight`` or ``done``)."""
        with self._lock:
            if key in self._keys:
                return self._keys[key][1]
            self._keys[key] = [label, self.IN_FLIGHT]
            return None

    def done(self, key: str) -> None:
        """The call of ``key`` has run (its node is stored)."""
        with self._lock:
            if key in self._keys:
                self._keys[key][1] = self.DONE

    def release(self, key: str) -> None:
        """Give ``key`` back (its call never ran, e.g. the sandbox was unreachable)."""
        with self._lock:
            self._keys.pop(key, None)

    def labels(self) -> list[str]:
        with self._lock:
            return [label for label, _ in self._keys.values()]


@dataclasses.dataclass
class Node:
    """A node of the tree in memory (the stored row's fields the exploration needs)."""

    id: int
    parent_id: int | None
    depth: int
    branch: int
    kind: str
    intent: str | None = None
    action: str | None = None
    params: dict | None = None
    shown_params: dict | None = None
    """The parameters without the seed's kwargs (what the model itself chose)."""
    observation: str | None = None
    code: int | None = None
    children: list["Node"] = dataclasses.field(default_factory=list)
    parent: "Node | None" = None

    def path(self) -> list["Node"]:
        """The action nodes from depth 1 to this node."""
        out, node = [], self
        while node is not None and node.kind != NODE_ROOT:
            out.append(node)
            node = node.parent
        return out[::-1]


def label_of(action: str, shown_params: dict | None) -> str:
    return f"{action} {json.dumps(shown_params or {}, ensure_ascii=False, sort_keys=True)}"


class TreeSampler:
    """Explores one seed. Create one per seed; :meth:`run` returns the whole tree.

    Args:
        cfg: The run's :class:`~agentflow.synthesis.config.SynthesisConfig`.
        model: The chat model.
        sandbox: The seed's sandbox client (its own ``worker_id``).
        toolbox: The tools offered (from :func:`agentflow.rollout.agent.discover_tools`).
        seed: The :class:`~agentflow.synthesis.seeds.Seed`.
        save_node: Stores one node (a dict of :class:`~agentflow.db.synthesis.SynthesisNode`
            fields) and returns its id; called from several threads.
        trace_id: Sent with every tool call of the seed.
        stop: Set to stop starting new expansions.
    """

    def __init__(self, cfg, model: ChatModel, sandbox: Sandbox, toolbox, seed, *,
                 save_node: Callable[[dict], int], trace_id: str, stop: threading.Event | None = None):
        self.cfg, self.model, self.sandbox, self.toolbox, self.seed = cfg, model, sandbox, toolbox, seed
        self.save_node = save_node
        self.trace_id = trace_id
        self.stop = stop or threading.Event()
        self.registry = ActionRegistry()
        self.tools = toolbox.for_task(seed.kwargs) + [STOP_BRANCH]
        self.tool_names = [t["function"]["name"] for t in self.tools]
        self.nodes: dict[int, Node] = {}
        self._halt = threading.Event()

    def _stopping(self) -> bool:
        return self.stop.is_set() or self._halt.is_set()

    # ------------------------------------------------------------------ tree

    def load(self, rows: list[dict]) -> Node | None:
        """Rebuild the tree from stored node rows (resume); returns the root."""
        root = None
        for row in sorted(rows, key=lambda r: r["id"]):
            node = Node(id=row["id"], parent_id=row["parent_id"], depth=row["depth"], branch=row["branch"],
                        kind=row["kind"], intent=row.get("intent"), action=row.get("action"),
                        params=row.get("params"), observation=row.get("observation"), code=row.get("code"))
            node.shown_params = self._shown(node.params)
            self.nodes[node.id] = node
            if node.kind == NODE_ROOT:
                root = node
            elif node.parent_id in self.nodes:
                node.parent = self.nodes[node.parent_id]
                node.parent.children.append(node)
            if node.kind == NODE_ACTION and node.action:
                key = action_key(node.action, node.params)
                self.registry.claim(key, label_of(node.action, node.shown_params))
                self.registry.done(key)
        return root

    def _shown(self, params: dict | None) -> dict:
        return {k: v for k, v in (params or {}).items() if k not in self.seed.kwargs}

    def _missing_branches(self, node: Node) -> list[int]:
        if node.kind not in (NODE_ROOT, NODE_ACTION):
            return []
        wanted = self.cfg.children_wanted(node.depth)
        have = {c.branch for c in node.children}
        return [b for b in range(wanted) if b not in have]

    def run(self, root: Node | None = None) -> Node:
        """Expand the tree until every branch has ended; returns the root.

        Raises:
            ExplorationError: the model or sandbox failed; finished nodes are stored.
        """
        if root is None:
            now = utcnow()
            row = {"parent_id": None, "depth": 0, "branch": 0, "kind": NODE_ROOT, "intent": self.seed.content,
                   "started_at": now, "finished_at": now}
            root = Node(id=self.save_node(row), parent_id=None, depth=0, branch=0, kind=NODE_ROOT,
                        intent=self.seed.content)
            self.nodes[root.id] = root
        todo = [(n, b) for n in list(self.nodes.values()) for b in self._missing_branches(n)]
        workers = max(1, self.cfg.max_expansions_per_seed)
        pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="expand")
        pending: set[cf.Future] = set()
        failure: BaseException | None = None
        try:
            for parent, branch in todo:
                pending.add(pool.submit(self._expand, parent, branch))
            while pending:
                done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    try:
                        child = fut.result()
                    except Exception as err:  # boundary: stop this tree, keep its stored nodes
                        failure = failure or err
                        self._halt.set()
                        continue
                    if child is None or self._stopping():
                        continue
                    for branch in self._missing_branches(child):
                        pending.add(pool.submit(self._expand, child, branch))
        finally:
            pool.shutdown(wait=True)
        if failure is not None:
            if isinstance(failure, ExplorationError):
                raise failure
            raise ExplorationError(f"unexpected {type(failure).__name__}: {failure}") from failure
        return root

    # ------------------------------------------------------------------ one expansion

    def _expand(self, parent: Node, branch: int) -> Node | None:
        """Make one child of ``parent``; returns it (``None`` when the run is stopping)."""
        if self._stopping():
            return None
        cfg = self.cfg
        depth = parent.depth + 1
        branches = cfg.children_wanted(parent.depth)
        messages = sampling_messages(cfg, self.seed, parent.path(), self.tool_names[:-1], depth=depth,
                                     branch=branch, branches=branches, taken=self.registry.labels())
        rec: dict[str, Any] = {"parent_id": parent.id, "depth": depth, "branch": branch, "refused": [],
                               "prompt_tokens": 0, "completion_tokens": 0, "model_ms": 0.0, "tool_ms": 0.0,
                               "started_at": utcnow(), "trace_id": self.trace_id}
        for _attempt in range(cfg.max_action_retries + 1):
            if self._stopping():
                return None
            t0 = time.perf_counter()
            try:
                reply = self.model.chat(messages, tools=self.tools)
            except LLMError as err:
                raise ExplorationError(f"model failed at depth {depth}: {type(err).__name__}: {err}") from err
            finally:
                rec["model_ms"] += (time.perf_counter() - t0) * 1000
            if not reply.cache_hit:  # a cached answer was not paid for
                rec["prompt_tokens"] += reply.usage.prompt_tokens
                rec["completion_tokens"] += reply.usage.completion_tokens
            intent = (reply.content or "").strip() or None
            if not reply.tool_calls:
                rec["refused"].append({"reason": "no_tool_call", "content": (reply.content or "")[:500]})
                messages = messages + [reply.to_message(), {
                    "role": "user", "content": f"Call exactly one tool (or {STOP_BRANCH_NAME}); do not answer in text."}]
                continue
            call, extra = reply.tool_calls[0], reply.tool_calls[1:]
            for other in extra:
                rec["refused"].append({"reason": "extra_call", "name": other.name, "arguments": other.arguments[:500]})
            if call.name == STOP_BRANCH_NAME:
                try:
                    reason = str(call.parse_arguments().get("reason") or "")
                except ValueError:
                    reason = call.arguments
                return self._store(parent, {**rec, "kind": NODE_STOP, "intent": reason or intent,
                                            "tool_name": call.name})
            problem, action, params = self._check_call(call)
            key = action_key(action, params) if action else None
            state = self.registry.claim(key, label_of(action, self._shown(params))) if problem is None else None
            if state is not None:
                problem = ("duplicate", f"Refused: {action} with these parameters was already taken in this "
                                        f"exploration tree ({state.replace('_', ' ')}). Choose a different action, "
                                        f"or call {STOP_BRANCH_NAME}.")
            if problem is not None:
                reason, text = problem
                rec["refused"].append({"reason": reason, "name": call.name, "arguments": call.arguments[:500],
                                       **({"state": state} if state else {})})
                messages = messages + [{"role": "assistant", "content": reply.content,
                                        "tool_calls": [call.to_openai()]},
                                       {"role": "tool", "tool_call_id": call.id, "content": text}]
                continue
            observation, code, error, request_id, tool_ms = self._execute(action, params, key)
            rec["tool_ms"] += tool_ms
            node = self._store(parent, {**rec, "kind": NODE_ACTION, "intent": intent, "tool_name": call.name,
                                        "action": action, "params": params, "action_key": key,
                                        "observation": observation, "observation_chars": len(observation),
                                        "code": code, "error": error, "request_id": request_id})
            self.registry.done(key)
            return node
        return self._store(parent, {**rec, "kind": NODE_FAILED,
                                    "intent": f"no usable action after {cfg.max_action_retries + 1} tries"})

    def _check_call(self, call) -> tuple[tuple[str, str] | None, str | None, dict | None]:
        action = self.toolbox.resolve(call.name)
        if action is None:
            return ("unknown_tool", f"Error: unknown tool '{call.name}'. Available tools: "
                                    f"{', '.join(self.tool_names)}."), None, None
        try:
            args = call.parse_arguments()
        except ValueError as err:
            return ("bad_arguments", f"Error: could not call '{call.name}': {err}. Send the arguments as one "
                                     f"JSON object."), None, None
        accepted = self.toolbox.param_names.get(action, ())
        injected = {k: v for k, v in self.seed.kwargs.items() if k in accepted}
        return None, action, {**args, **injected}

    def _execute(self, action: str, params: dict, key: str) -> tuple[str, int | None, str | None, str | None, float]:
        t0 = time.perf_counter()
        try:
            env = self.sandbox.execute_sync(action, params, trace_id=self.trace_id)
        except SandboxRequestError as err:  # bad parameter, session error: a result the model sees
            data = split_timing(err.data)[0]
            text = f"Error {err.code}: {err.message}"
            if data:
                text += "\n" + _dump(data)
            return text, err.code, err.message, err.request_id, (time.perf_counter() - t0) * 1000
        except SandboxError as err:
            self.registry.release(key)
            raise ExplorationError(f"sandbox failure on {action}: {type(err).__name__}: {err}") from err
        tool_ms = (time.perf_counter() - t0) * 1000
        meta = env.get("meta") or {}
        # timing (duration_ms, …) stays out of what the model is shown, so the same tree makes
        # the same requests and the model-call cache can answer them; the server's audit row
        # (request_id) keeps the whole result
        data = split_timing(env.get("data"))[0]
        if env.get("code") == 0:
            return _dump(data), 0, None, meta.get("request_id"), tool_ms
        text = f"Error {env.get('code')}: {env.get('message', '')}"
        if data:
            text += "\n" + _dump(data)
        return text, env.get("code"), env.get("message"), meta.get("request_id"), tool_ms

    def _store(self, parent: Node, rec: dict) -> Node | None:
        rec["finished_at"] = utcnow()
        node_id = self.save_node(rec)
        node = Node(id=node_id, parent_id=parent.id, depth=rec["depth"], branch=rec["branch"], kind=rec["kind"],
                    intent=rec.get("intent"), action=rec.get("action"), params=rec.get("params"),
                    observation=rec.get("observation"), code=rec.get("code"), parent=parent)
        node.shown_params = self._shown(node.params)
        parent.children.append(node)
        self.nodes[node.id] = node
        return node


def _dump(data: Any) -> str:
    if isinstance(data, str):
        return data
    return json.dumps(data, ensure_ascii=False, default=str)
