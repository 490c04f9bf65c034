"""YAML as people write it: PyYAML's safe loader with exponent floats (`1e-3`), duplicate keys refused, and caps
on size, nesting, alias expansion and integer length, so that bad input costs milliseconds and one line."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .errors import SpecError, not_a_file


_FLOAT = re.compile(r"""^(?:
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)  # YAML 1.1's float, plus exponents without a dot or a sign: 1e-3, 5e4


YAML_MAX_DEPTH = 50  # levels of mappings and lists (PyYAML composes recursively)
YAML_MAX_NODES = 100_000  # values of a document with its aliases expanded (billion laughs)
YAML_MAX_CHARS = 2_000_000  # scalar characters of a document with its aliases expanded
YAML_MAX_INT_DIGITS = 30  # seeds have 10; int() of thousands of digits is slow, and str() of them raises


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that `1e-3` and `5e-4` are floats (YAML 1.1 wants `1.0e-3`) and that a key
    given twice in one mapping is refused (PyYAML keeps the last one silently). Anchors, aliases and merge keys
    (`&recipe`, `*recipe`, `<<: *recipe`) are accepted: they repeat a section without copying it, and a key
    written beside a merge overrides the merged one, as YAML says. Nesting, alias expansion and integer
    length are capped (compose_node), so no document costs more than seconds and megabytes."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._keys: list[str] = []  # the mapping keys above the node being composed, for errors
        self._sizes: dict[int, tuple[int, int, int]] = {}  # id(node) -> (nodes, characters, depth), aliases expanded
        self._values = self._chars = 0  # composed so far, aliases expanded: refused as soon as there are too many

    yaml_implicit_resolvers = {  # SafeLoader's table (copied), its float pattern swapped for _FLOAT
        first: [(tag, _FLOAT if tag == "tag:yaml.org,2002:float" else rx) for tag, rx in resolvers]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    twice = key in seen
                except TypeError:  # an unhashable key: SafeLoader says so below
                    continue
                if twice:
                    raise SpecError(str(key), f"given twice, at lines {seen[key]} and {line}", "a key appears once in "
                                    "a mapping: YAML would silently keep only the last value; remove one")
                seen[key] = line
        return super().construct_mapping(node, deep)

    # Composing is bounded: PyYAML composes recursively (10,000 levels: RecursionError), and aliases share
    # nodes, so 500 bytes can expand to billions of values that an error message or a check then walks.
    def compose_node(self, parent, index):
        alias = self.check_event(yaml.AliasEvent)
        key = isinstance(parent, yaml.MappingNode) and isinstance(index, yaml.ScalarNode)
        if key:
            self._keys.append(index.value)
        self._depth += 1
        try:
            if self._depth > YAML_MAX_DEPTH:
                self._refuse(f"nested over {YAML_MAX_DEPTH} levels deep at line {self.peek_event().start_mark.line + 1}")
            node = super().compose_node(parent, index)
            if id(node) in self._sizes:  # an alias repeats all of its node
                self._values, self._chars = self._values + self._sizes[id(node)][0], self._chars + self._sizes[id(node)][1]
            else:  # a new node (its children are counted already)
                self._measure(node, alias)
                self._values, self._chars = self._values + 1, self._chars + len(node.value) * isinstance(node, yaml.ScalarNode)
            if self._values > YAML_MAX_NODES or self._chars > YAML_MAX_CHARS:
                self._refuse(f"over {YAML_MAX_NODES:,} values or {YAML_MAX_CHARS:,} characters by line "
                             f"{node.end_mark.line + 1}, aliases expanded", f"aliases may repeat a section, but a document "
                             f"expands to at most {YAML_MAX_NODES:,} values and {YAML_MAX_CHARS:,} characters")
            return node
        finally:
            self._depth -= 1
            if key:
                self._keys.pop()

    def _measure(self, node, alias: bool) -> None:
        line = node.start_mark.line + 1
        if alias:  # an alias of a node still being composed: the value would contain itself
            self._refuse(f"an alias at line {line} inside the section it names")
        if isinstance(node, yaml.ScalarNode):
            digits = len(node.value.lstrip("+-").replace("_", ""))
            if node.tag == "tag:yaml.org,2002:int" and digits > YAML_MAX_INT_DIGITS:  # refused before int()
                self._refuse(f"an integer of {digits} digits at line {line}: {node.value[:20]}…",
                             f"integers have at most {YAML_MAX_INT_DIGITS} digits")
            size = (1, len(node.value), 1)
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for kv in node.value for n in kv]
            sub = [self._sizes[id(c)] for c in children]
            size = (1 + sum(s[0] for s in sub), sum(s[1] for s in sub), 1 + max((s[2] for s in sub), default=0))
        if size[2] > YAML_MAX_DEPTH:
            self._refuse(f"nested over {YAML_MAX_DEPTH} levels deep at line {line}, aliases expanded")
        self._sizes[id(node)] = size

    def _refuse(self, what: str, allowed: str = f"YAML here nests at most {YAML_MAX_DEPTH} levels of mappings and lists"):
        raise SpecError(".".join(self._keys) or "(top level)", what, allowed)


def load_yaml(text: str) -> Any:
    """`yaml.safe_load` with floats as people write them (`lr: 1e-3`), duplicate keys refused and composition
    bounded (YamlLoader.compose_node)."""
    try:
        return yaml.load(text, Loader=YamlLoader)
    except RecursionError:  # a last resort: the depth cap should refuse first
        raise SpecError("(YAML)", "nested too deeply", f"YAML here nests at most {YAML_MAX_DEPTH} levels") from None




SPACE_MAX_BYTES = 1_000_000  # a search space is a few kB; a 50 MB file took a minute and 1 GB to refuse


def read_space(path: str | Path) -> tuple[Any, str]:
    """A search-space file, parsed (bounded in bytes, nesting, aliases and integers) and its text. It imports
    neither torch nor the rest of the package, so the CLI refuses a bad file before paying for `import torch`."""
    p = Path(path)
    if not p.is_file():
        raise SpecError("--space", str(path), f"{not_a_file(p)}; give a YAML search space such as search_spaces/quickstart.yaml")
    try:
        size = p.stat().st_size  # before reading a byte
        if size <= SPACE_MAX_BYTES:
            with p.open() as f:
                text = f.read(SPACE_MAX_BYTES + 1)  # bounded: the file may have grown since stat
            size = max(size, len(text))
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError("--space", str(path), f"cannot be read ({type(e).__name__})") from None
    if size > SPACE_MAX_BYTES:
        raise SpecError("--space", str(path), f"is {size:,} bytes; a search space is at most {SPACE_MAX_BYTES:,} bytes")
    try:
        return load_yaml(text), text
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise SpecError("--space", str(path), f"is not valid YAML{at}") from None
    except SpecError as e:  # duplicate keys, and the loader's caps on nesting, aliases and integers
        raise e.located(str(p)) from None


def parse_set_overrides(pairs: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs; values are parsed as YAML scalars (0.1, 1e-3, 5, true, null, cosine)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SpecError("--set", pair, "must be key=value, e.g. --set epochs=3 or --set tune.num_samples=2")
        k, v = pair.split("=", 1)
        try:
            out[k.strip()] = load_yaml(v)
        except yaml.YAMLError:
            raise SpecError(f"--set {k}", v, "the value must be a YAML scalar") from None
        except SpecError as e:  # the loader's caps (a 5000-digit integer, deep nesting) and duplicate keys
            raise SpecError(f"--set {k}" + (f" ({e.key})" if e.key != "(top level)" else ""), e.value, e.allowed) from None
    return out
