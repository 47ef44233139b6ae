"""A token request every INTERVAL seconds from a process of its own that does nothing else: how
long the authorization server takes to answer under the machine's load at that moment, with no
busy event loop and no other thread of ours in the way. Each request opens a connection of its
own, as the library's token requests do (the helper process's too): the same exchange, timed
where nothing of ours can slow it.

    python -m benchmarks._token_probe TOKEN_URL CLIENT_ID CLIENT_SECRET INTERVAL SECONDS

Prints one JSON list: the seconds each request took (the first, which pays for every first use,
left out). At most SECONDS long and 1,000 requests.
"""

from __future__ import annotations

import json
import sys
import time

import httpx


def main() -> None:
    url, client_id, secret = sys.argv[1:4]
    interval, seconds = float(sys.argv[4]), float(sys.argv[5])
    deadline = time.monotonic() + seconds
    times: list[float] = []
    fresh = httpx.Limits(max_keepalive_connections=0)  # as `planet_async._wire` sends
    with httpx.Client(
        trust_env=False, timeout=10.0, auth=(client_id, secret), limits=fresh
    ) as http:
        http.post(url, data={"grant_type": "client_credentials"}).raise_for_status()
        while time.monotonic() + interval < deadline and len(times) < 1000:
            time.sleep(interval)
            began = time.perf_counter()
            http.post(url, data={"grant_type": "client_credentials"}).raise_for_status()
            times.append(time.perf_counter() - began)
    print(json.dumps(times), flush=True)


if __name__ == "__main__":
    main()
