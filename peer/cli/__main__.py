"""`python -m peer.cli ...` (used by tests/harness.py and the chaos testbed) is `roam ...`."""
import sys

from peer.cli import main

sys.exit(main())
