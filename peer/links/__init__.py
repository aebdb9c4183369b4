"""The link estimate to each peer: its pure rules (`estimate`) and its I/O (`probe`)."""
