"""Orchestrator drivers: the seam between the agent and whatever runs services in a cluster.

`base` holds the `Driver` protocol, `Instance`, the event kinds and the error tree;
`descriptor` the validated service descriptor; `process` (with `process_state`, `lifetimes`,
`probing`, `restarts`) the embedded local-process driver; `kubernetes` (with `kube_objects`)
the Kubernetes driver.
"""
