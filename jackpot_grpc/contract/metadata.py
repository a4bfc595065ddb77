"""gRPC metadata the REST gateway adds to each call for the server (grpc-gateway's names)."""

# The HTTP caller's address as the gateway resolved it (jackpot_grpc.transport.peer_address): the
# server believes it only from a trusted proxy (JACKPOT_TRUSTED_PROXIES) or a gateway that
# proved itself (below), and throttles callers that keep failing one by one.
FORWARDED_FOR = "x-forwarded-for"
# The gateway's own credentials, `Bearer <JACKPOT_GATEWAY_TOKEN>`, apart from the caller's
# `authorization`: a client with the gateway role may vouch for its callers' addresses and
# do nothing else.
GATEWAY_AUTHORIZATION = "jackpot-gateway-authorization"
