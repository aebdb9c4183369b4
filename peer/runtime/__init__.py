"""The agent's plumbing: supervised tasks, sleeping loops, deadline polls, lazy imports, failpoints, metrics, its credentials and data dir."""
