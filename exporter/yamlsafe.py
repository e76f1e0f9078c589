"""YAML from an operator's file, with the limits PyYAML's safe loader does not have.

The safe loader builds one object per anchor and shares it among the aliases, so the 600-byte
"billion laughs" loads in microseconds; but whatever walks the result (the `${VAR}` expansion,
pydantic) visits all 10**9 strings, for minutes, with memory to match. So the composed node graph
is measured before anything is built: sizes and heights are memoised per node, which costs the
number of distinct nodes, not the expansion. A document is refused when its aliases add more
than ALIAS_EXPANSION_LIMIT values, when an alias sits inside the value it refers to (a cycle),
or when it is nested more than MAX_DEPTH levels deep (the composer and our walks recurse).
"""

from __future__ import annotations

from typing import Any, Final

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

ALIAS_EXPANSION_LIMIT: Final = 100_000  # values that aliases may add to a document
MAX_DEPTH: Final = 100  # nested mappings and sequences


class YAMLLimitError(yaml.MarkedYAMLError):
    """A document refused for its shape, not its syntax; `fix` says what to change."""

    def __init__(self, problem: str, fix: str, mark: yaml.Mark | None = None) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.fix = fix


def load(text: str) -> Any:
    """Like yaml.safe_load, but refusing alias bombs, alias cycles and very deep nesting."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise _too_deep(None) from None
        if node is None:
            return None
        _Measure().check(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _too_deep(mark: yaml.Mark | None) -> YAMLLimitError:
    return YAMLLimitError(
        f"nested more than {MAX_DEPTH} levels deep",
        "flatten the structure (a config is a few levels deep)",
        mark,
    )


class _Measure:
    """Expanded size and height of every distinct node, memoised, without following cycles."""

    def __init__(self) -> None:
        self.size: dict[int, int] = {}  # id(node) -> values once aliases are expanded
        self.height: dict[int, int] = {}
        self.nodes: dict[int, Node] = {}  # keeps ids valid; in post-order (children first)
        self._path: set[int] = set()

    def check(self, root: Node) -> None:
        self._walk(root, 1)
        added = self.size[id(root)] - len(self.size)
        if added > ALIAS_EXPANSION_LIMIT:
            # The smallest value over the limit (children come first) is where to look.
            worst = next(
                (n for k, n in self.nodes.items() if self.size[k] > ALIAS_EXPANSION_LIMIT), root
            )
            raise YAMLLimitError(
                f"aliases expand it to more than {ALIAS_EXPANSION_LIMIT} values",
                "write the values out instead of repeating aliases (an alias is for a few "
                "shared settings)",
                worst.start_mark,
            )

    def _walk(self, node: Node, depth: int) -> None:
        key = id(node)
        if key in self._path:
            raise YAMLLimitError(
                "an alias inside the value it refers to (a structure that contains itself)",
                "remove that alias",
                node.start_mark,
            )
        if key in self.size:
            if depth - 1 + self.height[key] > MAX_DEPTH:
                raise _too_deep(node.start_mark)
            return
        if depth > MAX_DEPTH:
            raise _too_deep(node.start_mark)
        if isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, SequenceNode):
            children = list(node.value)
        else:
            children = []
        self._path.add(key)
        for child in children:
            self._walk(child, depth + 1)
        self._path.discard(key)
        self.size[key] = 1 + sum(self.size[id(child)] for child in children)
        self.height[key] = 1 + max((self.height[id(child)] for child in children), default=0)
        self.nodes[key] = node
