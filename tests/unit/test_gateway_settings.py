"""Where the gateway's GET /api/jackpot/metrics reads the server's figures: the setting
JACKPOT_METRICS_URL (read with the other gateway settings), else this host's health port."""

from __future__ import annotations

from jackpot_grpc.config import Settings
from jackpot_grpc.gateway.metrics_proxy import metrics_url


def test_jackpot_metrics_url_is_read_with_the_gateway_settings() -> None:
    settings = Settings.from_env({"JACKPOT_METRICS_URL": " http://jackpot:3001/metrics "})
    assert settings.gateway.metrics_url == "http://jackpot:3001/metrics"
    assert metrics_url(settings) == "http://jackpot:3001/metrics"


def test_without_it_the_health_port_of_this_host_is_asked() -> None:
    assert Settings.from_env({"JACKPOT_METRICS_URL": "  "}).gateway.metrics_url is None
    assert metrics_url(Settings.from_env({"HEALTH_PORT": "4001"})) == (
        "http://127.0.0.1:4001/metrics"
    )
    on_v6 = Settings.from_env({"HEALTH_HOST": "::1", "HEALTH_PORT": "4001"})
    assert metrics_url(on_v6) == "http://[::1]:4001/metrics"
