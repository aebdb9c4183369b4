"""Sample workloads shipped with roam: a stateless classifier and a stream source that feeds it."""
