"""How calls reach the service and leave it: the aiohttp listeners' bounds (http_site), TLS
for the gRPC port and its channels, the servers a channel dials and balances over, and who
a peer is by address (X-Forwarded-For believed only from a trusted proxy)."""
