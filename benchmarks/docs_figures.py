"""Check (or rewrite) the benchmark figures a doc quotes against benchmarks/results/*.json.

    python benchmarks/docs_figures.py [--write] [DOC ...]     (default: docs/performance.md)

A quoted figure carries its source in an HTML comment right after the number, before the
unit, so it renders as plain text:

    312<!-- results: train_quick.json#results[case=tokenizer,devices=8].step_s * 1000 --> ms

The expression is terms joined by ` * `, ` / `, ` - ` or ` + ` (spaces around, evaluated
left to right). A term is a number or a path into a results file: `FILE#PATH`, or `PATH`
alone for the file named by the last `<!-- results file: FILE -->` above it. PATH is dotted
keys; `[3]` indexes a list and `[key=value,...]` picks the one element whose fields have
those values. The figure must equal the value to the precision it is printed with (312
matches 312.41, not 313.0).

A number followed by a unit (ms, s, %, ×, GFLOP, ...) with no marker is reported as
untagged, so a new figure cannot slip in unsourced; one that is not a result (a target, a
figure from a run whose file is not committed) says so: `5<!-- unchecked: the goal --> %`.
`--write` rewrites every tagged figure to its file's value at the printed precision.
"""

from __future__ import annotations

import argparse
import json
import operator
import pathlib
import re
import sys
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_DOCS = ("docs/performance.md",)

NUMBER = r"[-−]?\d[\d,]*(?:\.\d+)?"
TAGGED = re.compile(rf"(?<![\w.,])(?P<number>{NUMBER})<!-- results: (?P<expr>.+?) -->")
FILE_DIRECTIVE = re.compile(r"<!-- results file: (?P<file>\S+) -->")
UNITS = r"ms|s|%|×|GFLOP/s|GFLOP|MB|images/s|examples/s|steps/s"
UNTAGGED = re.compile(rf"(?<![\w.,])(?P<number>{NUMBER}) ?(?:{UNITS})(?![\w/])")
OPERATORS = {"*": operator.mul, "/": operator.truediv, "-": operator.sub, "+": operator.add}
OPERATOR_SPLIT = re.compile(r" ([*/+-]) ")
PATH_PART = re.compile(r"\[([^\]]*)\]|([^.\[\]]+)")
# A comma starts the next key=value pair only when one follows (values may hold commas).
SELECTOR_SPLIT = re.compile(r",(?=[\w-]+=)")
UNCHECKED_BLOCK = ("<!-- unchecked block:", "<!-- end unchecked -->")


class ResultsPathError(ValueError):
    """A marker whose file, key or selector does not resolve."""


@dataclass(frozen=True)
class Figure:
    line: int
    printed: str  # as written in the doc, e.g. "1,286"
    expr: str
    file: str  # the file a bare PATH term reads

    @property
    def decimals(self) -> int:
        return len(self.printed.split(".")[1]) if "." in self.printed else 0

    @property
    def number(self) -> float:
        return float(self.printed.replace(",", "").replace("−", "-"))


def tagged_figures(text: str) -> list[Figure]:
    """Every tagged figure of a doc, with the results file in force at its line."""
    figures, current = [], ""
    for line_no, line in enumerate(text.splitlines(), 1):
        events = [(m.start(), "file", m) for m in FILE_DIRECTIVE.finditer(line)]
        events += [(m.start(), "figure", m) for m in TAGGED.finditer(line)]
        for _, kind, match in sorted(events, key=lambda e: e[0]):
            if kind == "file":
                current = match["file"]
            else:
                figures.append(Figure(line_no, match["number"], match["expr"], current))
    return figures


def untagged_figures(text: str) -> list[tuple[int, str]]:
    """(line, text) of each number with a unit and no marker, outside code blocks and
    unchecked blocks."""
    found, in_code, unchecked = [], False, False
    for line_no, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            in_code = not in_code
        elif stripped.startswith(UNCHECKED_BLOCK[0]):
            unchecked = True
        elif stripped == UNCHECKED_BLOCK[1]:
            unchecked = False
        elif not (in_code or unchecked):
            found += [(line_no, m.group(0)) for m in UNTAGGED.finditer(line)]
    return found


def lookup(data, path: str):
    """The value at PATH (dotted keys, [index], [key=value,...]) inside loaded JSON."""
    value = data
    for selector, key in PATH_PART.findall(path):
        if key:
            if not isinstance(value, dict) or key not in value:
                raise ResultsPathError(f"no key {key!r} on the way to {path!r}")
            value = value[key]
        elif selector.isdigit():
            if not isinstance(value, list) or int(selector) >= len(value):
                raise ResultsPathError(f"no element [{selector}] on the way to {path!r}")
            value = value[int(selector)]
        else:
            value = _select(value, selector, path)
    return value


def _select(items, selector: str, path: str):
    pairs = [pair.split("=", 1) for pair in SELECTOR_SPLIT.split(selector)]
    if any(len(pair) != 2 for pair in pairs):
        raise ResultsPathError(f"[{selector}] is not key=value,... in {path!r}")
    wanted = dict(pairs)
    if not isinstance(items, list):
        raise ResultsPathError(f"[{selector}] needs a list on the way to {path!r}")
    matches = [item for item in items if isinstance(item, dict)
               and all(_as_text(item.get(k)) == v for k, v in wanted.items())]  # fmt: skip
    if len(matches) != 1:
        raise ResultsPathError(f"[{selector}] matches {len(matches)} elements in {path!r}")
    return matches[0]


def _as_text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def evaluate(expr: str, default_file: str, load) -> float:
    """The expression's value; `load(name)` returns a results file's parsed JSON."""
    parts = OPERATOR_SPLIT.split(expr.strip())
    total = _term(parts[0], default_file, load)
    for op, term in zip(parts[1::2], parts[2::2]):
        total = OPERATORS[op](total, _term(term, default_file, load))
    return total


def _term(term: str, default_file: str, load) -> float:
    try:
        return float(term)
    except ValueError:
        pass
    name, _, path = term.rpartition("#") if "#" in term else (default_file, "", term)
    if not name:
        raise ResultsPathError(f"{term!r} names no results file and none is in force")
    value = lookup(load(name), path)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ResultsPathError(f"{name}#{path} is {value!r}, not a number")
    return float(value)


def matches(figure: Figure, value: float) -> bool:
    """Does the printed figure equal VALUE to the precision it is printed with?"""
    half_step = 0.5 * 10.0**-figure.decimals
    return abs(figure.number - value) <= half_step * (1 + 1e-9)


def formatted(value: float, like: str) -> str:
    """VALUE printed the way LIKE is: the same decimals, thousands commas, minus sign."""
    decimals = len(like.split(".")[1]) if "." in like else 0
    text = f"{value:,.{decimals}f}" if "," in like else f"{value:.{decimals}f}"
    return text.replace("-", "−") if "−" in like else text


def json_loader(results_dir: pathlib.Path):
    cache: dict[str, object] = {}

    def load(name: str):
        if name not in cache:
            path = results_dir / name
            if not path.is_file():
                raise ResultsPathError(f"no results file {name} in {results_dir.name}/")
            cache[name] = json.loads(path.read_text())
        return cache[name]

    return load


def problems(text: str, results_dir: pathlib.Path = RESULTS, doc: str = "doc") -> list[str]:
    """One line per tagged figure that disagrees with (or cannot find) its value, and per
    untagged figure."""
    load, found = json_loader(results_dir), []
    for figure in tagged_figures(text):
        try:
            value = evaluate(figure.expr, figure.file, load)
        except (ResultsPathError, ZeroDivisionError) as error:
            found.append(f"{doc}:{figure.line}: {figure.printed}: {error}")
            continue
        if not matches(figure, value):
            found.append(f"{doc}:{figure.line}: {figure.printed}, but {figure.expr} "
                         f"is {formatted(value, figure.printed)} ({value:.6g})")  # fmt: skip
    found += [
        f"{doc}:{line}: untagged figure {figure!r}" for line, figure in untagged_figures(text)
    ]
    return found


def rewritten(text: str, results_dir: pathlib.Path = RESULTS) -> str:
    """TEXT with every tagged figure replaced by its value at the printed precision."""
    load, out, current = json_loader(results_dir), [], ""
    for line in text.splitlines(keepends=True):
        pieces, end = [], 0
        events = sorted([*FILE_DIRECTIVE.finditer(line), *TAGGED.finditer(line)],
                        key=lambda m: m.start())  # fmt: skip
        for match in events:
            if "file" in match.groupdict():
                current = match["file"]
                continue
            value = evaluate(match["expr"], current, load)
            pieces += [line[end : match.start()], formatted(value, match["number"])]
            end = match.start("number") + len(match["number"])
        out.append("".join(pieces) + line[end:])
    return "".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("docs", nargs="*", default=list(DEFAULT_DOCS))
    parser.add_argument("--write", action="store_true", help="rewrite tagged figures")
    args = parser.parse_args(argv)
    failed = False
    for doc in args.docs:
        path = ROOT / doc
        if args.write:
            path.write_text(rewritten(path.read_text()))
        found = problems(path.read_text(), doc=doc)
        print("\n".join(found) if found else f"{doc}: every figure matches its results file")
        failed = failed or bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
