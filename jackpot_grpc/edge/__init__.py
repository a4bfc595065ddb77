"""The edge: HAProxy in front of the public gRPC and REST ports, keyed on each client
(docs/DEPLOY.md, "The edge"). Its config is generated here from the settings and the
clients file; `jackpot run --edge` runs it."""
