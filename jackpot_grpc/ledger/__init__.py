"""The tamper-evident ledger's pure core: leaf encoding, RFC 9162 Merkle tree, checkpoints.

No database, no settings, no I/O: every function takes bytes or values and returns bytes
or values, so an outside verifier can check the same things (docs/LEDGER.md).
"""
