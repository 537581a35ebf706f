"""Lines of code of the greenray package and its longest functions, for comparing two trees
(e.g. before and after a refactor: `git worktree add /tmp/old COMMIT`, then run on both).

    python benchmarks/code_size.py greenray [--top 8]

Lines: every line of the package's .py files; code lines: those that are neither blank nor a
comment nor inside a docstring. A function's length: its code lines, `def` to last statement.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                lines |= set(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def measure(root: Path) -> tuple[int, int, int, list[tuple[int, str]]]:
    files, total, code, functions = 0, 0, 0, []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        docs = docstring_lines(tree)
        files += 1
        code_lines = set()
        for number, line in enumerate(text.splitlines(), start=1):
            total += 1
            stripped = line.strip()
            if stripped and not stripped.startswith("#") and number not in docs:
                code_lines.add(number)
        code += len(code_lines)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{path.relative_to(root.parent)}:{node.name}"
                span = set(range(node.lineno, node.end_lineno + 1))
                functions.append((len(span & code_lines), name))
    return files, total, code, sorted(functions, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    files, total, code, functions = measure(args.package)
    print(f"{args.package}: {files} files, {total} lines, {code} code lines, {len(functions)} functions")
    print(f"functions over 40 lines: {sum(1 for n, _ in functions if n > 40)}")
    for length, name in functions[: args.top]:
        print(f"  {length:4d}  {name}")


if __name__ == "__main__":
    main()
