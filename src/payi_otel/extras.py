"""The optional extras of the package (``pyproject.toml``): which one a missing module belongs to, and how to add it.

The ``payi-otel`` command is installed with the plugin alone; its service commands need the ``service`` extra and
the demo's recorded responses the ``replay`` extra. A command that finds one missing says which extra to install
instead of failing with a traceback.
"""

from __future__ import annotations

__all__ = ["install_hint", "missing_extra"]

# Top-level modules of each extra's distributions (their import names, not their distribution names).
_EXTRA_OF_MODULE = {
    **dict.fromkeys(
        ("fastapi", "starlette", "uvicorn", "genai_prices", "uvloop", "httptools", "orjson", "msgspec",
         "swagger_ui_bundle", "psycopg", "psycopg_pool", "aiohttp", "certifi"),
        "service",
    ),
    "yaml": "replay",
}  # fmt: skip


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The extra that installs the module ``exc`` did not find; None for a module of no extra."""
    return _EXTRA_OF_MODULE.get((exc.name or "").partition(".")[0])


def install_hint(extra: str) -> str:
    """How to add ``extra`` (the package is installed from its repository, not from a registry)."""
    return f'pip install "/path/to/payi-otel[{extra}]" (your clone of payi-otel, or its Git URL)'
