"""Run by tests in a separate process: THREADS callers make CALLS chat completions each through the proxy.

Usage: python _proxy_callers.py BASE_URL API_KEY LIMIT_ID THREADS CALLS REQUEST_JSON
Prints {"ok": n, "refused": n} (refused: answered 400 limit_reached).
"""

from __future__ import annotations

import json
import sys
import threading

import openai


def main() -> None:
    base_url, api_key, limit_id, threads, calls, request = sys.argv[1:7]
    client = openai.OpenAI(
        api_key="sk-provider-key",
        base_url=f"{base_url}/api/v1/proxy/openai/v1",
        default_headers={"xProxy-api-key": api_key, "xProxy-Limit-IDs": limit_id},
        max_retries=0,
    )
    counts = {"ok": 0, "refused": 0}
    lock = threading.Lock()

    def caller() -> None:
        for _ in range(int(calls)):
            try:
                client.chat.completions.create(**json.loads(request))
                outcome = "ok"
            except openai.BadRequestError as exc:
                assert exc.response.json()["xproxy_error"]["code"] == "limit_reached", exc.response.text
                outcome = "refused"
            with lock:
                counts[outcome] += 1

    workers = [threading.Thread(target=caller) for _ in range(int(threads))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
