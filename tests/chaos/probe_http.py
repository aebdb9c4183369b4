"""Run inside a namespace: GET a URL once; print `<status> <bytes> <seconds>`; exit 0 on 2xx.

Standard library only, so it starts fast (`python -S`).
"""
import sys
import time
import urllib.request

url, timeout = sys.argv[1], float(sys.argv[2])
t0 = time.monotonic()
try:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body = resp.read()
        print(resp.status, len(body), f"{time.monotonic() - t0:.3f}")
        sys.exit(0 if 200 <= resp.status < 300 else 1)
except Exception as exc:  # noqa: BLE001 - any failure is the answer
    print("ERR", type(exc).__name__, exc)
    sys.exit(1)
