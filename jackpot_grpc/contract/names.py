"""Names the gRPC contract fixes, for every layer that needs them (read from the descriptors,
so they cannot drift from the proto)."""

from __future__ import annotations

from jackpot.v1 import jackpot_pb2

# The fully qualified name of JackpotService: its health service name and metrics label.
JACKPOT_SERVICE = jackpot_pb2.DESCRIPTOR.services_by_name["JackpotService"].full_name
