"""Service records (LR/AR/FR) replicated between the clusters that share a service.

vclock (clocks) -> record (the value and its wire form) -> merge (pure reconciliation rules)
-> store (SQLite) -> messages + antientropy (the peer API exchange).
"""
