"""The sample classifier and stream source as real processes: answers, open-loop frames, SIGTERM."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

import pytest

from peer.samples.classifier import LABELS, classify
from peer.runtime.waiting import wait_until_sync

pytestmark = pytest.mark.integration
HOST, PORT = "127.0.4.3", 41100


def test_classify_is_deterministic() -> None:
    label, score = classify(bytes(range(256)) * 32)
    assert label in LABELS and 0 < score <= 1
    assert classify(bytes(range(256)) * 32) == (label, score)
    assert classify(b"") == ("empty", 1.0)


def test_stream_feeds_the_classifier_and_both_stop_cleanly() -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "peer.samples.classifier", "--host", HOST, "--port", str(PORT), "--cluster", "c7"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        def healthy() -> bool:
            with urllib.request.urlopen(f"http://{HOST}:{PORT}/healthz", timeout=2) as resp:
                return resp.status == 200

        wait_until_sync(healthy, timeout=30, what="classifier healthy")
        stream = subprocess.run(
            [sys.executable, "-m", "peer.samples.stream", f"http://{HOST}:{PORT}/classify",
             "--rate", "40", "--count", "20", "--report-every", "0"],
            capture_output=True, text=True, timeout=60, check=True,
        )
        final = json.loads(stream.stdout.strip().splitlines()[-1])
        assert (final["final"], final["sent"], final["ok"], final["failed"]) == (True, 20, 20, 0)
        assert final["clusters"] == {"c7": 20}

        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=30)
        assert server.returncode == 0 and b"stopping" in out
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_stream_counts_failures_when_nothing_answers() -> None:
    stream = subprocess.run(
        [sys.executable, "-m", "peer.samples.stream", f"http://{HOST}:{PORT + 1}/classify",
         "--rate", "50", "--count", "5", "--timeout", "1", "--report-every", "0"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    final = json.loads(stream.stdout.strip().splitlines()[-1])
    assert (final["sent"], final["ok"], final["failed"]) == (5, 0, 5)
