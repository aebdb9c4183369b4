"""roam's chaos testbed: clusters in network namespaces on one machine (`netns`), faults
injected from outside (`faults`, `schedule`), open-loop load (`load`), invariant checkers
(`checkers`), leftover probes (`leftovers`) and reports (`report`)."""
