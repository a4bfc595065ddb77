"""Long-lived service processes freeze what start-up made, so full garbage collections
skip it.

After start-up a server process holds about 110,000 objects (modules, gRPC, protobuf,
OpenTelemetry, the app's own) that live as long as it does. Python's full (generation 2)
collection walks every one of them: 26-38 ms a collection, about one a second under
Contribute load, and each is a pause for every call in flight (the event loop and the
batch thread share the GIL). `gc.freeze()` moves them to a permanent generation that
collections skip: the pauses fell to about 5 ms and Contribute's p99 at 64 in flight from
55 to 38 ms (BENCHMARKS.md). Only the service entry points call this, once they serve:
in-process servers (tests) would freeze their host's objects too.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def freeze_startup_objects() -> int:
    """Collect start-up's garbage, then freeze what is left; how many objects that is."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("froze %d start-up objects out of garbage collection", frozen)
    return frozen
