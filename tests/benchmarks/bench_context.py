"""Business-context costs: the read the span core does on every provider call, and entering scopes.

Run: .venv/bin/python tests/benchmarks/bench_context.py
Prints nanoseconds per operation (best of several repeats).
"""

from __future__ import annotations

import asyncio
import timeit

from payi_otel import track, track_context
from payi_otel.context import clear_global_defaults, current_business_context, merge, set_global_defaults

REPEATS = 5


def best_ns(stmt, number: int) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=REPEATS)) / number * 1e9


def read() -> object:
    ctx = current_business_context()
    return ctx.span_attributes if ctx is not None else None


def main() -> None:
    set_global_defaults(use_case_name="bench", limit_ids=["org"], request_properties={"team": "a"})
    rows = []
    rows.append(("current_business_context()+span_attributes, globals only", best_ns(read, 200_000)))
    with (
        track_context(use_case_name="outer", user_id="jane", limit_ids=["daily"]),
        track_context(use_case_step="s1", request_properties={"k": "v"}),
    ):
        rows.append(("current_business_context()+span_attributes, 2 nested scopes", best_ns(read, 200_000)))
        set_global_defaults(use_case_name="bench", limit_ids=["org2"])
        rows.append(
            (
                "  same, first read after globals changed (re-merge)",
                best_ns(lambda: (set_global_defaults(use_case_name="bench"), read()), 20_000)
                - best_ns(lambda: set_global_defaults(use_case_name="bench"), 20_000),
            )
        )

    scope = track_context(user_id="jane", limit_ids=["daily"])

    def enter_exit() -> None:
        with scope:
            pass

    rows.append(("track_context enter/exit (user_id, limit_ids)", best_ns(enter_exit, 100_000)))

    new_instance = track_context(use_case_name="inner")

    def enter_exit_new_instance() -> None:
        with new_instance:
            pass

    rows.append(("track_context enter/exit, new use-case instance (uuid4)", best_ns(enter_exit_new_instance, 100_000)))

    @track(user_id="jane")
    def tracked() -> None:
        pass

    def plain() -> None:
        pass

    rows.append(("@track sync call overhead", best_ns(tracked, 100_000) - best_ns(plain, 100_000)))

    parent = current_business_context()
    rows.append(
        ("merge(parent, user_id=...) (per-call header layer)", best_ns(lambda: merge(parent, user_id="bob"), 100_000))
    )

    async def amain() -> float:
        loop = asyncio.get_running_loop()
        n = 20_000
        start = loop.time()
        for _ in range(n):
            async with scope:
                pass
        return (loop.time() - start) / n * 1e9

    rows.append(("async with track_context enter/exit", asyncio.run(amain())))
    clear_global_defaults()

    width = max(len(name) for name, _ in rows)
    for name, ns in rows:
        print(f"{name:<{width}}  {ns:8.0f} ns")


if __name__ == "__main__":
    main()
