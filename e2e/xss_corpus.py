"""Hostile strings: what a recorded value may hold, and what each would do if it ran.

Each payload, if it ever reached the page as markup instead of text, would open
a dialog (``alert``), create an element the tests look for, or make htmx fetch
``/x``. The page must show every one of them as the literal text it is.
"""

from __future__ import annotations

PAYLOADS: tuple[str, ...] = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(1)",
    "'><svg onload=alert(1)>",
    "{{7*7}}",
    "</title><script>alert(1)</script>",
    '" onmouseover="alert(1)',
    "</textarea><script>alert(1)</script>",
    "${alert(1)}",
    # htmx attribute injection: would fetch /x as soon as it is swapped in.
    '" hx-get="/x" hx-trigger="load" x="',
    "<div hx-get=/x hx-trigger=load hx-swap=outerHTML>x</div>",
    "</style><style>*{display:none}</style>",
    "<iframe src=javascript:alert(1)></iframe>",
    "<a href=javascript:alert(1)>click</a>",
    "<!--",
    "]]><![CDATA[<script>alert(1)</script>",
    "</svg><svg><script>alert(1)</script></svg>",
    "';alert(1);//",
    "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    # Right-to-left override and zero-width characters: shown, not interpreted.
    "\u202egnp.exe\u202c \u200bzero\u200dwidth\ufeff",
)

# Elements, attributes and links that any payload above would create if it were
# parsed as markup. None may exist anywhere on the page.
INJECTED = (
    "img[src='x']", "svg[onload]", "[onerror]", "[onmouseover]", "[onload]", "iframe",
    "[hx-get='/x']", "[hx-get='x']", "a[href^='javascript:']", "script:not([src])",
    "style", "div[hx-trigger='load']",
)


def at(i: int) -> str:
    """The payload number ``i`` (wrapping), for spreading the corpus over fields."""
    return PAYLOADS[i % len(PAYLOADS)]


def cut(text: str, limit: int) -> str:
    """``text`` cut to fit a field that holds at most ``limit`` characters."""
    return text[:limit]
