"""Unit tests: action keys, the registry, QA checks, path scoring and selection."""
from __future__ import annotations

import threading

from agentflow.synthesis import ActionRegistry, action_key, check_qa, load_config
from agentflow.synthesis.qa import DuplicateIndex, QACandidate
from agentflow.synthesis.sampler import Node
from agentflow.synthesis.selection import path_similarity, select_paths

CFG = load_config({"min_hops": 2})


def test_action_keys_normalise_parameters():
    assert action_key("rag:search", {"query": "  Heap   Queue ", "top_k": 5.0}) == \
        action_key("rag:search", {"top_k": 5, "query": "heap queue"})
    assert action_key("web:visit", {"urls": "https://x"}) == action_key("web:visit", {"urls": ["https://x"]})
    assert action_key("rag:search", {"query": "a"}) != action_key("web:search", {"query": "a"})
    assert action_key("rag:search", {"query": "a", "top_k": None}) == action_key("rag:search", {"query": "a"})


def test_registry_refuses_in_flight_and_done_actions_once_each_under_contention():
    reg = ActionRegistry()
    wins = []
    barrier = threading.Barrier(8)

    def claim():
        barrier.wait()
        wins.append(reg.claim("k", "label") is None)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert wins.count(True) == 1
    assert reg.claim("k", "label") == "in_flight"
    reg.done("k")
    assert reg.claim("k", "label") == "done"
    reg.release("k")
    assert reg.claim("k", "label") is None


def _steps(*observations):
    return [{"observation": o, "code": 0} for o in observations]


def _check(question, answer, steps, reasoning=("a", "b"), dup=None):
    return check_qa(QACandidate(question=question, answer=answer, reasoning_steps=list(reasoning)), steps, CFG, dup)


def test_qa_checks_reasons():
    steps = _steps('{"title": "heapq — Heap queue algorithm", "year": 2004}', '{"n": "1,234.50 units"}')
    assert _check("Which module implements the heap queue algorithm?", "heapq", steps).status == "accepted"
    assert _check("Which year, 2004 or later?", "2004", steps).reason == "answer_leaked"
    assert _check("What is the count?", "1234.5", steps).status == "accepted"  # numeric support
    assert _check("What is the count?", "42", steps).reason == "unsupported_answer"
    assert _check("Which module is the heap one?", "bisect module", steps).reason == "unsupported_answer"
    assert _check("Which module implements it?", "heapq", steps, reasoning=["one"]).reason == "too_few_hops"
    assert _check("Which?", "heapq", steps).reason == "too_short"
    assert _check("Which module? " * 100, "heapq", steps).reason == "too_long"
    assert _check("", "heapq", steps).reason == "malformed"
    failed = _check("What did the failing call say?", "heapq", [{"observation": "heapq", "code": 2001}] * 2)
    assert failed.reason == "unsupported_answer"  # failed calls are no evidence
    # every check's outcome is recorded
    assert set(_check("Which year, 2004 or later?", "2004", steps).checks) >= {
        "malformed", "too_short", "too_long", "answer_leaked", "unsupported_answer", "too_few_hops"}


def test_near_duplicate_questions_are_dropped():
    steps = _steps("heapq implements the heap queue algorithm", "priority queue")
    dup = DuplicateIndex(0.85)
    assert _check("Which module implements the heap queue algorithm?", "heapq", steps, dup=dup).status == "accepted"
    again = _check("Which module implements the heap-queue algorithm ?", "heapq", steps, dup=dup)
    assert again.reason == "duplicate_question" and again.checks["duplicate_question"]["similarity"] >= 0.85
    assert _check("In which standard library module is a priority queue built on lists?", "heapq", steps,
                  dup=dup).status == "accepted"


def _tree():
    root = Node(id=0, parent_id=None, depth=0, branch=0, kind="root")
    nodes = {0: root}

    def add(i, parent, action, obs, code=0, branch=0):
        n = Node(id=i, parent_id=parent, depth=nodes[parent].depth + 1, branch=branch, kind="action", action=action,
                 params={"q": str(i)}, observation=obs, code=code, parent=nodes[parent])
        nodes[parent].children.append(n)
        nodes[i] = n

    rich = " ".join(f"word{i}" for i in range(200))
    add(1, 0, "rag:search", rich)
    add(2, 0, "rag:search", rich, branch=1)
    add(3, 1, "web:search", rich)
    add(4, 2, "rag:search", "error", code=2001)
    add(5, 3, "web:visit", rich)
    add(6, 4, "rag:search", "tiny")
    return root, nodes


def test_selection_scores_and_similarity_filter():
    root, nodes = _tree()
    paths = select_paths(root, min_depth=2, max_depth=4, max_selected=2, threshold=0.7, n_tools=3)
    assert [p.node_ids for p in paths] == [[1, 3, 5], [2, 4, 6]]  # deeper diverse informative path first
    assert paths[0].diversity_score == 1.0 and paths[0].info_score == 1.0 and paths[1].info_score < 0.5
    assert all(p.selected for p in paths) and [p.rank for p in paths] == [1, 2]
    assert path_similarity(paths[0].nodes, paths[0].nodes) == 1.0
    # a path sharing a prefix with a chosen one is skipped when the threshold is strict
    n7 = Node(id=7, parent_id=3, depth=3, branch=1, kind="action", action="web:visit", params={"q": "7"},
              observation=nodes[5].observation, code=0, parent=nodes[3])
    nodes[3].children.append(n7)
    assert path_similarity([nodes[1], nodes[3], nodes[5]], [nodes[1], nodes[3], n7]) == 0.5
    strict = select_paths(root, min_depth=2, max_depth=4, max_selected=3, threshold=0.4, n_tools=3)
    chosen = {tuple(p.node_ids): p for p in strict}
    assert chosen[(1, 3, 5)].selected and chosen[(2, 4, 6)].selected
    assert not chosen[(1, 3, 7)].selected and "too similar (0.50 > 0.4)" in chosen[(1, 3, 7)].note
    one = select_paths(root, min_depth=3, max_depth=4, max_selected=1, threshold=0.7, n_tools=3)
    assert [p.selected for p in one] == [True, False, False] and "max_selected_traj" in one[1].note
