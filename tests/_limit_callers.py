"""Run by tests in a separate process: THREADS callers make CALLS chat completions each against a shared block
limit, through the service's proxy (``proxy``) or straight to the provider with the plugin enforcing the
limit (``reserve`` / ``cached``; ingest events sent to the service by the Pay-i exporter).

Usage: python _limit_callers.py MODE SERVICE_URL API_KEY UPSTREAM_URL LIMIT_ID THREADS CALLS REQUEST_JSON SPOOL_DIR
Prints {"ok": n, "refused": n}.
"""

from __future__ import annotations

import json
import os
import sys
import threading

import openai


def main() -> None:
    mode, service, key, upstream, limit_id, threads, calls, request, spool = sys.argv[1:10]
    refused_errors: tuple[type[BaseException], ...]
    if mode == "proxy":
        client = openai.OpenAI(
            api_key="sk-provider-key",
            base_url=f"{service}/api/v1/proxy/openai/v1",
            default_headers={"xProxy-api-key": key, "xProxy-Limit-IDs": limit_id},
            max_retries=0,
        )
        refused_errors = (openai.BadRequestError,)
        handle = None
    else:
        os.environ.update(PAYI_BASE_URL=service, PAYI_API_KEY=key, PAYI_SPOOL_DIR=spool, OTEL_BSP_SCHEDULE_DELAY="50")
        from payi_otel import LimitBlockedError, instrument

        handle = instrument(instruments={"payi_openai"}, exporter=True, enforce_limits=mode, limit_ids=[limit_id])
        client = openai.OpenAI(api_key="sk-provider-key", base_url=f"{upstream}/v1", max_retries=0)
        refused_errors = (LimitBlockedError,)
    counts = {"ok": 0, "refused": 0}
    lock = threading.Lock()

    def caller() -> None:
        for _ in range(int(calls)):
            try:
                client.chat.completions.create(**json.loads(request))
                outcome = "ok"
            except refused_errors:
                outcome = "refused"
            with lock:
                counts[outcome] += 1

    workers = [threading.Thread(target=caller) for _ in range(int(threads))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if handle is not None:
        handle.tracer_provider.force_flush()
        handle.uninstrument()  # shuts the exporter down: every event delivered before the process ends
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
