"""YAML under limits, for every document the server reads (pipelines, kubeconfigs).

``yaml.safe_load`` builds whatever the document describes: a 1.3 KB chain of merge keys
(``<<: [*a, *a]``) or of aliases (billion laughs) expands to gigabytes, and 100,000 nested
brackets exhaust the stack.  Here anchors, aliases and merge keys are refused while the
document is composed, before anything is expanded, and size and depth are bounded."""
from __future__ import annotations

from typing import Any, Callable

import yaml

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 16
MERGE_TAG = "tag:yaml.org,2002:merge"

# Builds the caller's own error (a PipelineError with the file, a ValidationError naming a
# field) from a message and a line number (or None).
Fail = Callable[[str, "int | None"], Exception]


class _Loader(yaml.SafeLoader):
    """A SafeLoader that refuses anchors, aliases and merge keys, and nesting past a depth."""

    def __init__(self, stream: str, fail: Fail, max_depth: int):
        super().__init__(stream)
        self.fail, self.max_depth, self.depth = fail, max_depth, 0

    def fetch_flow_collection_start(self, TokenClass):
        # refused in the scanner already: it would read up to 1,024 characters ahead of each
        # of 100,000 '[' to decide whether it starts a key, before the composer sees any depth
        if self.flow_level >= self.max_depth:
            raise self.fail(f"nesting deeper than {self.max_depth} levels", self.line + 1)
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent, index):
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise self.fail("YAML anchors and aliases (&name, *name) are not allowed", line)
        self.depth += 1
        if self.depth > self.max_depth:
            raise self.fail(f"nesting deeper than {self.max_depth} levels", line)
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if node.tag == MERGE_TAG:
            raise self.fail("YAML merge keys (<<) are not allowed", line)
        return node


def compose(text: str, fail: Fail, *, max_bytes: int = MAX_BYTES,
            max_depth: int = MAX_DEPTH) -> yaml.Node | None:
    """The document's node tree (None if empty), or ``fail(message, line)`` raised."""
    if len(text) > max_bytes or len(text.encode("utf-8", "replace")) > max_bytes:
        raise fail(f"larger than {max_bytes // 1024} KiB", None)
    loader = None
    try:
        loader = _Loader(text, fail, max_depth)  # refuses non-printable characters at once
        return loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        # the problem text describes syntax only; it never quotes scalar values at length
        raise fail(f"YAML syntax error: {exc.problem or exc.context}",
                   mark.line + 1 if mark else None) from None
    except yaml.reader.ReaderError as exc:
        raise fail(f"character #x{exc.character:04x} is not allowed in YAML", None) from None
    except yaml.YAMLError as exc:
        raise fail(f"YAML error: {type(exc).__name__}", None) from None
    finally:
        if loader is not None:
            loader.dispose()


def construct(node: yaml.Node, fail: Fail) -> Any:
    """The Python value of a composed node (safe tags only)."""
    try:
        return yaml.SafeLoader("").construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or node.start_mark
        raise fail(f"YAML error: {exc.problem or 'unsupported tag'}", mark.line + 1) from None
    except yaml.YAMLError:
        raise fail("YAML error: unsupported tag", node.start_mark.line + 1) from None
    except (ValueError, OverflowError):  # e.g. an integer of more than 4,300 digits
        raise fail("a value cannot be read (a number too large?)",
                   node.start_mark.line + 1) from None


def load(text: str, fail: Fail, *, max_bytes: int = MAX_BYTES,
         max_depth: int = MAX_DEPTH) -> Any:
    """``safe_load`` under the limits above."""
    node = compose(text, fail, max_bytes=max_bytes, max_depth=max_depth)
    return None if node is None else construct(node, fail)
