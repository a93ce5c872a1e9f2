"""YAML with line numbers: parse a config and remember where every value is.

PyYAML's composed nodes carry start marks; we walk them once to build the
plain Python value and a map from the value's path (``("features", 3, "kind")``)
to its 1-based line, so validation problems can point at the line to edit.
Duplicate mapping keys, which PyYAML would silently overwrite, are reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ehr_fed.mapping.problems import Problem

Path_ = tuple[Any, ...]


class LocatedYaml:
    """A parsed YAML document with the line of each path.

    Attributes
    ----------
    data : object
        The document as plain Python values (dict, list, str, int, float, bool, None).
    lines : dict
        Path tuple -> 1-based line of the value node.
    key_lines : dict
        Path tuple -> 1-based line of the mapping key naming it.
    problems : list of Problem
        Duplicate keys found while parsing.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.data: Any = None
        self.lines: dict[Path_, int] = {}
        self.key_lines: dict[Path_, int] = {}
        self.problems: list[Problem] = []

    def line_of(self, path: Path_, *, key: bool = False) -> int | None:
        """Line of ``path``, else of its closest parent that has one."""
        path = tuple(path)
        while True:
            if key and path in self.key_lines:
                return self.key_lines[path]
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]


def parse_yaml(text: str, file: str) -> tuple[LocatedYaml | None, list[Problem]]:
    """Parse ``text``; return the located document, or None and a ``yaml_syntax`` problem."""
    doc = LocatedYaml(file)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        col = f", column {mark.column + 1}" if mark else ""
        what = exc.problem or str(exc)
        ctx = f" ({exc.context})" if exc.context else ""
        return None, [
            Problem(file, line, "yaml_syntax", f"YAML syntax error{col}: {what}{ctx}",
                    "check indentation, colons and quoting on this line (quote values containing ': ' or '#')")
        ]
    except yaml.YAMLError as exc:
        return None, [Problem(file, None, "yaml_syntax", f"YAML error: {exc}", "fix the YAML syntax")]
    finally:
        loader.dispose()
    if node is None:
        doc.data = {}
        return doc, []
    doc.data = _walk(node, (), doc, loader)
    return doc, list(doc.problems)


def _walk(node: yaml.Node, path: Path_, doc: LocatedYaml, loader: yaml.SafeLoader) -> Any:
    doc.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                key = str(key)
            if key in out:
                doc.problems.append(
                    Problem(doc.file, key_node.start_mark.line + 1, "duplicate_key",
                            f"key {key!r} appears twice in {_fmt(path)}; the second would silently win",
                            "remove or rename one of them")
                )
            doc.key_lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _walk(value_node, path + (key,), doc, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, path + (i,), doc, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _fmt(path: Path_) -> str:
    return "/".join(str(p) for p in path) if path else "the top level"


def read_yaml(path: str | Path) -> tuple[LocatedYaml | None, list[Problem]]:
    """Read and parse a YAML file; a missing or unreadable file is a ``file_not_found`` problem."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [Problem(file, None, "file_not_found", "no such file", "check the path")]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(file, None, "unreadable_file", f"cannot read the file: {exc}",
                              "check permissions and that it is UTF-8 text")]
    return parse_yaml(text, file)


def dump_yaml(data: Any) -> str:
    """YAML text for ``data`` keeping key order (used for round trips)."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)
