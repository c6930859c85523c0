"""The prompts and function tools synthesis sends to the model.

Exploration is a tool-calling conversation: the path from the root is replayed as the
model's own earlier tool calls and their results, then one user message asks for the
next step. The model answers by calling one sandbox tool (its text beside the call is
recorded as the step's *intent*) or :data:`STOP_BRANCH`. QA writing offers one function,
:data:`SUBMIT_QA`, whose arguments are the QA pair, so nothing is parsed out of free text.
"""
from __future__ import annotations

import json
from typing import Any

__all__ = ["STOP_BRANCH", "STOP_BRANCH_NAME", "SUBMIT_QA", "SUBMIT_QA_NAME", "qa_messages", "sampling_messages"]

STOP_BRANCH_NAME = "stop_branch"
STOP_BRANCH = {
    "type": "function",
    "function": {
        "name": STOP_BRANCH_NAME,
        "description": ("End this branch of the exploration: call it when the evidence gathered so far is enough "
                        "for a good multi-step question, or when no further tool call would add new facts."),
        "parameters": {"type": "object",
                       "properties": {"reason": {"type": "string", "description": "Why the branch ends here."}},
                       "required": ["reason"]},
    },
}

SUBMIT_QA_NAME = "submit_qa"
SUBMIT_QA = {
    "type": "function",
    "function": {
        "name": SUBMIT_QA_NAME,
        "description": "Submit the question-answer pair written from the exploration trajectory.",
        "parameters": {
            "type": "object",
            "properties": {
                "question": {"type": "string", "description": "The question; it must not contain the answer."},
                "answer": {"type": "string", "description": "The short answer, exactly as supported by the "
                                                            "observations."},
                "reasoning_steps": {"type": "array", "items": {"type": "string"},
                                    "description": "One step per hop: which observation gives which fact."},
            },
            "required": ["question", "answer", "reasoning_steps"],
        },
    },
}


def _bullets(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def sampling_messages(cfg, seed, path: list, tool_names: list[str], *, depth: int, branch: int, branches: int,
                      taken: list[str]) -> list[dict]:
    """The conversation asking for the step after ``path`` (a list of action nodes)."""
    system = (
        "You explore tools to collect facts for multi-hop question answering data.\n"
        f"Starting point ({cfg.seed_description}) is given by the user. At each step call exactly ONE tool "
        f"({', '.join(tool_names)}) to learn something new that builds on what you found before, and write one "
        "short sentence beside the call saying what you want to learn (your intent). "
        f"Call {STOP_BRANCH_NAME} when this line of exploration has nothing more to give."
    )
    if cfg.sampling_tips:
        system += "\n\nTips:\n" + _bullets(cfg.sampling_tips)
    seed_text = f"{cfg.seed_description}:\n{seed.content}"
    if seed.kwargs:
        seed_text += ("\n\n(These parameters are filled in for you on every tool call that takes them: "
                      f"{json.dumps(seed.kwargs, ensure_ascii=False)})")
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}, {"role": "user", "content": seed_text}]
    for node in path:
        # named by depth, not by the node's database id: the prompt must be a function of the
        # seed and the tool results alone, or no rerun would meet the model-call cache
        call_id = f"call_d{node.depth}"
        messages.append({"role": "assistant", "content": node.intent or None, "tool_calls": [{
            "id": call_id, "type": "function",
            "function": {"name": node.action.replace(":", "-", 1),
                         "arguments": json.dumps(node.shown_params, ensure_ascii=False)}}]})
        messages.append({"role": "tool", "tool_call_id": call_id, "content": _cap(node.observation or "",
                                                                                     cfg.max_observation_chars)})
    step = f"Step {depth} of at most {cfg.max_depth}"
    if branches > 1:
        step += (f"; this is branch {branch + 1} of {branches} from here: explore a direction different "
                 f"from the other branches")
    step += "."
    if taken:
        step += ("\nThese actions were already taken elsewhere in this exploration; do not repeat them:\n"
                 + _bullets(taken[-30:]))
    step += f"\nCall one tool now (or {STOP_BRANCH_NAME})."
    messages.append({"role": "user", "content": step})
    return messages


def qa_messages(cfg, seed, steps: list[dict]) -> list[dict]:
    """The conversation asking for one QA pair grounded in ``steps`` (see :func:`trajectory_steps`)."""
    system = (
        "You write one question-answer pair for training research agents, from an exploration trajectory.\n"
        "Rules: the question needs several steps of the trajectory to answer (chain facts across observations); "
        "the answer is short and stated exactly as the observations support it; the question must not contain "
        "or give away the answer; write one reasoning step per hop, naming the fact each observation gives.\n"
        f"Submit with the {SUBMIT_QA_NAME} function."
    )
    if cfg.synthesis_tips:
        system += "\n\nTips:\n" + _bullets(cfg.synthesis_tips)
    if cfg.qa_examples:
        examples = "\n".join(f"Q: {e['question']}\nA: {e['answer']}" for e in cfg.qa_examples[:5])
        system += "\n\nExamples of the style wanted:\n" + examples
    lines = [f"{cfg.seed_description}:\n{seed.content}", "", "Trajectory:"]
    for i, step in enumerate(steps, start=1):
        lines.append(f"[{i}] intent: {step['intent'] or '-'}")
        lines.append(f"    action: {step['action']} {json.dumps(step['params'], ensure_ascii=False)}")
        lines.append(f"    observation: {_cap(step['observation'] or '', cfg.max_observation_chars)}")
    lines.append("")
    lines.append(f"Write the QA pair now and submit it with {SUBMIT_QA_NAME}.")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(lines)}]


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[truncated: showing {limit} of {len(text)} characters]"
