"""roam's version, in a module of its own so that what reports it (the status API, the CLI)
need not import the OpenAPI generator (peer.api.openapi) that also prints it."""

VERSION = "0.1.0"
