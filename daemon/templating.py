"""``{{Profile.x}}`` placeholders in message specs (a small Liquid subset).

Supported: ``{{Profile.<property>}}``, ``{{Event.<property>}}``, ``{{Campaign.<key>}}`` (the
campaign's key-values), each with an optional ``| default: "text"`` filter. Property names are
matched without regard to letter case. A missing value renders as the default, or as "".
"""

from __future__ import annotations

import re
from typing import Any

_TAG = re.compile(
    r"\{\{\s*(Profile|Event|Campaign)\.([^\s|}]+)\s*(?:\|\s*default\s*:\s*(?:\"([^\"]*)\"|'([^']*)'))?\s*\}\}"
)


def _lookup(scope: dict[str, Any], name: str) -> Any:
    if name in scope:
        return scope[name]
    low = name.lower()
    for k, v in scope.items():
        if isinstance(k, str) and k.lower() == low:
            return v
    return None


def render_text(text: str, ctx: dict[str, dict[str, Any]]) -> str:
    def sub(m: re.Match[str]) -> str:
        value = _lookup(ctx.get(m.group(1), {}), m.group(2))
        default = m.group(3) if m.group(3) is not None else (m.group(4) or "")
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return _TAG.sub(sub, text) if "{{" in text else text


def render(value: Any, ctx: dict[str, dict[str, Any]]) -> Any:
    """Render every string inside a JSON-like value."""
    if isinstance(value, str):
        return render_text(value, ctx)
    if isinstance(value, dict):
        return {k: render(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, ctx) for v in value]
    return value
