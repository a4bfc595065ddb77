"""The OpenAPI document carries the proto comments, the Idempotency-Key header and the
error schema; the comments come from the descriptor set `make generate` ships."""

from __future__ import annotations

from typing import Any

from jackpot_grpc.gateway.app import jackpot_services
from jackpot_grpc.gateway.openapi import openapi_document
from jackpot_grpc.gateway.proto_comments import comments
from jackpot_grpc.gateway.routes import build_routes


def document() -> dict[str, Any]:
    return openapi_document(build_routes(jackpot_services()))


def test_comments_come_from_the_shipped_descriptor_set() -> None:
    found = comments()
    assert found["jackpot.v1.JackpotService.Contribute"].startswith("Splits a share")
    assert found["jackpot.v1.WinRequest.win_amount"] == "Unset: the whole pool is won."
    assert "\n" in found["jackpot.v1.JackpotService.ContributeBatch"]  # whole comments


def test_operations_and_schemas_are_described() -> None:
    doc = document()
    contribute = doc["paths"]["/api/jackpot/contribute"]["post"]
    comment = comments()["jackpot.v1.JackpotService.Contribute"]
    assert contribute["description"] == f"{comment}\n\nNeeds a client with one of the roles: game."
    schemas = doc["components"]["schemas"]
    win = schemas["jackpot.v1.WinRequest"]["properties"]
    assert win["winAmount"]["description"] == "Unset: the whole pool is won."
    assert win["winAmount"]["nullable"] is True
    pool = schemas["jackpot.v1.Pool"]["properties"]
    assert pool["maxAmount"]["description"] == "Unset: the pool has no cap."


def test_idempotency_key_is_a_header_parameter_where_the_request_has_the_field() -> None:
    doc = document()
    for path, method in (("/api/jackpot/contribute", "post"), ("/api/jackpot/win", "post")):
        headers = [p for p in doc["paths"][path][method]["parameters"] if p["in"] == "header"]
        assert [h["name"] for h in headers] == ["Idempotency-Key"]
        assert headers[0]["required"] is False
    pools = doc["paths"]["/api/jackpot/pools"]["get"]
    assert not [p for p in pools.get("parameters", []) if p["in"] == "header"]


def test_errors_are_a_status_with_typed_details() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]
    status = schemas["google.rpc.Status"]
    assert status["required"] == ["code", "message"]
    kinds = [i.get("$ref", "") for i in status["properties"]["details"]["items"]["anyOf"]]
    for detail in ("google.rpc.ErrorInfo", "google.rpc.BadRequest", "google.rpc.RetryInfo"):
        assert f"#/components/schemas/{detail}" in kinds
        assert schemas[detail]["properties"]["@type"]["enum"] == [f"type.googleapis.com/{detail}"]
    for path in doc["paths"].values():
        for operation in path.values():
            error = operation["responses"]["default"]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/google.rpc.Status"}
