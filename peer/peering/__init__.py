"""The peer API's one wire protocol: codec and request authentication (`wire`), the client and server middleware (`client`), the replay cache (`nonces`)."""
