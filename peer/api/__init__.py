"""HTTP APIs of the agent: the admin API (bearer token) and the peer API (federation HMAC)."""
