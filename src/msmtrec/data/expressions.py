"""Label and filter expressions over columns, evaluated vectorised and safely.

A spec may give a task label as an expression (``income_50k == "50000+."``, ``play_time_ms >= 18000``) or
filter rows. The expression is parsed with :mod:`ast` and only comparisons, boolean logic, arithmetic,
column names, literals and a few numeric functions are allowed: no attribute access, no calls to
arbitrary code. Column names that are not Python identifiers are written in backticks (```301` == 1``).
"""

from __future__ import annotations

import ast
import operator
import re

import numpy as np
import pandas as pd

from msmtrec.errors import SpecError

_BACKTICK = re.compile(r"`([^`]+)`")
_CMP = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_FUNCS = {"log1p": np.log1p, "abs": np.abs, "isnull": pd.isna, "notnull": pd.notna}


def _prepare(expr: str) -> tuple[ast.Expression, dict[str, str]]:
    aliases: dict[str, str] = {}

    def repl(m: re.Match[str]) -> str:
        alias = f"__col{len(aliases)}"
        aliases[alias] = m.group(1)
        return alias

    text = _BACKTICK.sub(repl, expr)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise SpecError(f"expression {expr!r} is not valid: {e.msg}") from None
    return tree, aliases


def referenced_columns(expr: str) -> list[str]:
    """Columns an expression reads (a bare name is a column unless it is a known function)."""
    tree, aliases = _prepare(expr)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in _FUNCS and node.id not in ("True", "False"):
            name = aliases.get(node.id, node.id)
            if name not in out:
                out.append(name)
    return out


def is_plain_column(expr: str) -> bool:
    return _BACKTICK.sub("x", expr).strip().isidentifier() or (expr.startswith("`") and expr.endswith("`"))


def evaluate(expr: str, frame: pd.DataFrame, where: str) -> pd.Series:
    """Evaluate ``expr`` over ``frame``; ``where`` names the spec key for error messages."""
    tree, aliases = _prepare(expr)
    missing = [c for c in referenced_columns(expr) if c not in frame.columns]
    if missing:
        raise SpecError(f"{where}: expression {expr!r} references missing column(s) {missing}")

    def ev(node: ast.AST):  # noqa: ANN202 - returns scalars or Series
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return frame[aliases.get(node.id, node.id)]
        if isinstance(node, ast.Compare):
            left = ev(node.left)
            result = None
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = ev(comp)
                if isinstance(op, ast.In | ast.NotIn):
                    if not isinstance(comp, ast.List | ast.Tuple):
                        raise SpecError(f"{where}: 'in' needs a literal list in {expr!r}")
                    part = pd.Series(left).isin(right)
                    part = ~part if isinstance(op, ast.NotIn) else part
                elif type(op) in _CMP:
                    part = _CMP[type(op)](left, right)
                else:
                    raise SpecError(f"{where}: operator {type(op).__name__} not allowed in {expr!r}")
                result = part if result is None else (result & part)
                left = right
            return result
        if isinstance(node, ast.BoolOp):
            values = [ev(v) for v in node.values]
            out = values[0]
            for v in values[1:]:
                out = (out & v) if isinstance(node.op, ast.And) else (out | v)
            return out
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand)
            if isinstance(node.op, ast.Not):
                return ~v if isinstance(v, pd.Series) else (not v)
            if isinstance(node.op, ast.USub):
                return -v
        if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
            return _BIN[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.List | ast.Tuple):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS:
            return _FUNCS[node.func.id](*[ev(a) for a in node.args])
        raise SpecError(f"{where}: {type(node).__name__} is not allowed in expression {expr!r}")

    try:
        value = ev(tree)
    except TypeError as e:
        raise SpecError(f"{where}: expression {expr!r} cannot be evaluated on this data: {e}") from None
    if not isinstance(value, pd.Series):
        value = pd.Series(value, index=frame.index)
    return value
