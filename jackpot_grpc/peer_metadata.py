"""gRPC metadata the REST gateway adds to each call for the server (grpc-gateway's names)."""

# The HTTP caller's address (trusted only from a loopback gateway): the server throttles
# callers that keep failing authentication one by one, not the gateway as a whole.
FORWARDED_FOR = "x-forwarded-for"
