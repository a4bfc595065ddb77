"""Short-lived use cases for the CLI: open a pool, run one thing, close it."""

from __future__ import annotations

from jackpot_grpc.adapters.database import create_pool
from jackpot_grpc.config import Settings
from jackpot_grpc.domain.model import PoolAudit
from jackpot_grpc.service.jackpot import JackpotService


async def run_audit(settings: Settings, database_url: str) -> list[PoolAudit]:
    pool = create_pool(settings, database_url)
    await pool.open(wait=True, timeout=10)
    try:
        return await JackpotService(pool).audit()
    finally:
        await pool.close()
