"""Path selection (SPEC §7.2): score root-to-leaf paths, choose greedily, skip look-alikes.

A path is the action nodes from depth 1 to a leaf (an action node without action
children). Paths shorter than ``min_depth`` are not considered. Each path gets

* ``depth_score`` = depth / ``max_depth``;
* ``info_score`` = mean information of its observations: 0 for a failed call, else the
  number of distinct words in the observation / 150 (capped at 1), so empty or tiny
  answers count for little;
* ``diversity_score`` = distinct tools / min(depth, number of tools offered);

and ``score = 0.4·depth + 0.4·info + 0.2·diversity``. Paths are taken best first; a path
whose similarity to an already chosen one is above ``path_similarity_threshold`` is
skipped. Similarity is the larger of the Jaccard overlap of the two paths' nodes (shared
prefixes) and of their actions (tool + parameters).
"""
from __future__ import annotations

import dataclasses
import re

from ..db.synthesis import NODE_ACTION
from .sampler import Node, action_key

__all__ = ["ScoredPath", "enumerate_paths", "information", "path_similarity", "score_path", "select_paths"]

WEIGHTS = {"depth": 0.4, "info": 0.4, "diversity": 0.2}
INFO_WORDS = 150
_WORD = re.compile(r"[A-Za-z0-9]+(?:[.'][A-Za-z0-9]+)*")


@dataclasses.dataclass
class ScoredPath:
    """A candidate path and its score parts; ``selected``/``rank``/``note`` after selection."""

    nodes: list[Node]
    score: float = 0.0
    depth_score: float = 0.0
    info_score: float = 0.0
    diversity_score: float = 0.0
    selected: bool = False
    rank: int | None = None
    max_similarity: float = 0.0
    note: str | None = None

    @property
    def node_ids(self) -> list[int]:
        return [n.id for n in self.nodes]

    @property
    def depth(self) -> int:
        return len(self.nodes)

    @property
    def leaf(self) -> Node:
        return self.nodes[-1]


def enumerate_paths(root: Node, min_depth: int) -> list[list[Node]]:
    """Every root-to-leaf path of action nodes with at least ``min_depth`` steps."""
    out: list[list[Node]] = []

    def walk(node: Node, prefix: list[Node]) -> None:
        kids = [c for c in sorted(node.children, key=lambda c: (c.branch, c.id)) if c.kind == NODE_ACTION]
        if not kids:
            if len(prefix) >= min_depth:
                out.append(prefix)
            return
        for child in kids:
            walk(child, prefix + [child])

    walk(root, [])
    return out


def information(node: Node) -> float:
    """0..1: how much an observation says (0 for a failed call)."""
    if node.code not in (0, None) or not node.observation:
        return 0.0
    words = {w.lower() for w in _WORD.findall(node.observation)}
    return min(1.0, len(words) / INFO_WORDS)


def score_path(nodes: list[Node], max_depth: int, n_tools: int) -> ScoredPath:
    depth = len(nodes)
    p = ScoredPath(nodes=nodes)
    p.depth_score = min(1.0, depth / max_depth) if max_depth else 1.0
    p.info_score = sum(information(n) for n in nodes) / depth if depth else 0.0
    tools = {n.action for n in nodes}
    p.diversity_score = len(tools) / max(1, min(depth, max(1, n_tools)))
    p.score = round(WEIGHTS["depth"] * p.depth_score + WEIGHTS["info"] * p.info_score
                    + WEIGHTS["diversity"] * p.diversity_score, 6)
    return p


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def path_similarity(a: list[Node], b: list[Node]) -> float:
    """0..1: overlap of two paths by shared nodes or by equal actions."""
    by_node = _jaccard({n.id for n in a}, {n.id for n in b})
    by_action = _jaccard({action_key(n.action, n.params) for n in a}, {action_key(n.action, n.params) for n in b})
    return max(by_node, by_action)


def select_paths(root: Node, *, min_depth: int, max_depth: int, max_selected: int, threshold: float,
                 n_tools: int) -> list[ScoredPath]:
    """Score every path and choose up to ``max_selected`` (see the module docstring).

    Returns:
        All candidate paths, best first, with ``selected``, ``rank`` and ``note`` set.
    """
    paths = [score_path(p, max_depth, n_tools) for p in enumerate_paths(root, min_depth)]
    paths.sort(key=lambda p: (-p.score, -p.depth, p.leaf.id))
    chosen: list[ScoredPath] = []
    for p in paths:
        sims = [(path_similarity(p.nodes, c.nodes), c) for c in chosen]
        p.max_similarity = round(max((s for s, _ in sims), default=0.0), 6)
        if len(chosen) >= max_selected:
            p.note = f"max_selected_traj ({max_selected}) reached"
            continue
        too_close = [(s, c) for s, c in sims if s > threshold]
        if too_close:
            s, c = max(too_close, key=lambda x: x[0])
            p.note = f"too similar ({s:.2f} > {threshold:g}) to the path ending at node {c.leaf.id}"
            continue
        p.selected = True
        p.rank = len(chosen) + 1
        chosen.append(p)
    return paths
