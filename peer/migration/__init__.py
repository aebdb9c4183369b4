"""The migration engine: the paper's five stages (II-C), multi-hop (Fig. 4) and the fail-safe."""
