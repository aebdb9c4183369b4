"""Per-cluster identity (issue 19): a federation CA, certificates naming one cluster each, mTLS
on the peer API, and a signed revocation list spread to every member.

`certs` is the pure part (what a certificate and a revocation list say, checked against the
CA); `ca` is the CA's files (`roam ca ...`); `identity` is the agent's side (TLS contexts,
reloaded when the files change; who a peer request comes from); `spread` moves revocation
lists between agents (admin push, peer push, pulled in a background round).
"""
