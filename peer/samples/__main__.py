"""`roam-sample classifier|stream ...`: the bundled samples as one console script.

Why: a descriptor that says `"command": ["roam-sample", "classifier", ...]` runs the sample from
roam's own installation wherever it is, so the README's descriptor works when copied (a bare
`python3 -m ...` would find the system Python, which has no `peer`).
"""
from __future__ import annotations

import sys
from collections.abc import Sequence

SAMPLES = ("classifier", "stateful", "stream")


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in SAMPLES:
        sys.stderr.write(f"usage: roam-sample {{{','.join(SAMPLES)}}} [--host H] [--port P] ...\n")
        raise SystemExit(2)
    if args[0] == "classifier":
        from peer.samples import classifier

        classifier.main(args[1:])
    elif args[0] == "stateful":
        from peer.samples import stateful

        stateful.main(args[1:])
    else:
        from peer.samples import stream

        stream.main(args[1:])


if __name__ == "__main__":
    main()
