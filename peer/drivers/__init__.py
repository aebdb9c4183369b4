"""Orchestrator drivers: the seam between the agent and whatever runs services in a cluster.

`base` holds the `Driver` protocol, `Instance` and the error tree; `descriptor` the validated
service descriptor; `process` and `kubernetes` the two drivers.
"""
