"""The gateway is generic: a test-only proto, compiled here, gets its REST routes with no code.

A tiny echo service (served in-process by a generic gRPC handler) exercises path templates,
body and query mapping, metadata forwarding and the status table over real HTTP.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.api import annotations_pb2
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, duration_pb2, message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from grpc_tools import protoc  # type: ignore[import-untyped]
from jackpot.v1 import jackpot_pb2

from jackpot_grpc.gateway.app import create_gateway_app, start_gateway
from jackpot_grpc.gateway.http_errors import HTTP_STATUS
from jackpot_grpc.gateway.openapi import openapi_document
from jackpot_grpc.gateway.routes import build_routes, parse_template
from jackpot_grpc.gateway.transcode import forwarded_metadata
from testkit.certs import self_signed

ECHO_PROTO = """
syntax = "proto3";
package gatewaytest.v1;

import "google/api/annotations.proto";
import "google/protobuf/timestamp.proto";

service EchoService {
  rpc Echo(EchoRequest) returns (EchoReply) {
    option (google.api.http) = {
      post: "/v1/echo"
      body: "*"
      additional_bindings { get: "/v1/echo/{text}" }
    };
  }
  rpc GetBook(GetBookRequest) returns (Book) {
    option (google.api.http) = { get: "/v1/{name=shelves/*/books/*}" };
  }
  rpc UpdateBook(UpdateBookRequest) returns (Book) {
    option (google.api.http) = { patch: "/v1/books/{book.id}" body: "book" };
  }
  rpc Fail(FailRequest) returns (EchoReply) {
    option (google.api.http) = { post: "/v1/fail" body: "*" };
  }
  rpc Hidden(EchoRequest) returns (EchoReply);
  rpc Stream(EchoRequest) returns (stream EchoReply) {
    option (google.api.http) = { get: "/v1/stream" };
  }
}

enum Color { COLOR_UNSPECIFIED = 0; COLOR_RED = 1; }
message Inner { int32 depth = 1; }
message EchoRequest {
  string text = 1;
  int64 count = 2;
  bool loud = 3;
  repeated string tags = 4;
  Color color = 5;
  Inner inner = 6;
  string idempotency_key = 7;
}
message EchoReply {
  string text = 1;
  int64 count = 2;
  bool loud = 3;
  repeated string tags = 4;
  Color color = 5;
  int32 depth = 6;
  map<string, string> metadata = 7;
  string idempotency_key = 8;
}
message GetBookRequest { string name = 1; }
message Book { string id = 1; string title = 2; google.protobuf.Timestamp published = 3; }
message UpdateBookRequest { Book book = 1; string reason = 2; }
message FailRequest {
  int32 code = 1;
  string message = 2;
  repeated string bad_fields = 3;
  int32 retry_seconds = 4;
  int32 sleep_ms = 5;
}
"""

SERVICE = "gatewaytest.v1.EchoService"


def _compile(proto: str, out: Path) -> ServiceDescriptor:
    """protoc → FileDescriptorSet → a fresh pool (nothing leaks into the default pool)."""
    (out / "echo.proto").write_text(proto)
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    googleapis = Path(annotations_pb2.__file__).parents[2]
    descriptor_set = out / "echo.pb"
    code = protoc.main(
        [
            "protoc",
            f"-I{out}",
            f"-I{well_known}",
            f"-I{googleapis}",
            "--include_imports",
            f"--descriptor_set_out={descriptor_set}",
            str(out / "echo.proto"),
        ]
    )
    assert code == 0, "protoc failed"
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return pool.FindServiceByName(SERVICE)


@pytest.fixture(scope="module")
def echo_service(tmp_path_factory: pytest.TempPathFactory) -> ServiceDescriptor:
    return _compile(ECHO_PROTO, tmp_path_factory.mktemp("echo_proto"))


def _cls(service: ServiceDescriptor, name: str) -> Any:
    return message_factory.GetMessageClass(service.file.pool.FindMessageTypeByName(name))


def _echo_handlers(service: ServiceDescriptor) -> grpc.GenericRpcHandler:
    """The test service's implementation: echoes its input and the metadata it received."""
    echo_request = _cls(service, "gatewaytest.v1.EchoRequest")
    echo_reply = _cls(service, "gatewaytest.v1.EchoReply")
    get_book = _cls(service, "gatewaytest.v1.GetBookRequest")
    update_book = _cls(service, "gatewaytest.v1.UpdateBookRequest")
    book = _cls(service, "gatewaytest.v1.Book")
    fail = _cls(service, "gatewaytest.v1.FailRequest")

    async def echo(request: Any, context: grpc.aio.ServicerContext) -> Any:
        return echo_reply(
            text=request.text,
            count=request.count,
            loud=request.loud,
            tags=request.tags,
            color=request.color,
            depth=request.inner.depth,
            metadata=dict(context.invocation_metadata() or ()),
            idempotency_key=request.idempotency_key,
        )

    async def get(request: Any, context: grpc.aio.ServicerContext) -> Any:
        return book(id=request.name, title="found")

    async def update(request: Any, context: grpc.aio.ServicerContext) -> Any:
        reply = book()
        reply.CopyFrom(request.book)
        reply.title = f"{request.book.title} ({request.reason})"
        return reply

    async def failing(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await asyncio.sleep(request.sleep_ms / 1000)
        details = []
        if request.bad_fields:
            violations = [
                error_details_pb2.BadRequest.FieldViolation(field=f, description="bad")
                for f in request.bad_fields
            ]
            details.append(_pack(error_details_pb2.BadRequest(field_violations=violations)))
        if request.retry_seconds:
            delay = duration_pb2.Duration(seconds=request.retry_seconds)
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        status = status_pb2.Status(code=request.code, message=request.message, details=details)
        await context.abort_with_status(rpc_status.to_status(status))

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if request.text == "dropped":  # as gRPC core does with a call it never handed over
            await context.abort(grpc.StatusCode.CANCELLED, "dropped")
        for n in range(request.count):
            yield echo_reply(text=f"{request.text} {n}")

    def unary(fn: Callable[..., Any], request: Any, reply: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=request.FromString, response_serializer=reply.SerializeToString
        )

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": unary(echo, echo_request, echo_reply),
            "GetBook": unary(get, get_book, book),
            "UpdateBook": unary(update, update_book, book),
            "Fail": unary(failing, fail, echo_reply),
            "Stream": grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=echo_request.FromString,
                response_serializer=echo_reply.SerializeToString,
            ),
        },
    )


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


@pytest.fixture(scope="module")
async def echo_target(echo_service: ServiceDescriptor) -> AsyncIterator[str]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_echo_handlers(echo_service),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


@pytest.fixture(scope="module")
async def base(echo_service: ServiceDescriptor, echo_target: str) -> AsyncIterator[str]:
    app = create_gateway_app(
        echo_target,
        max_body_bytes=1024,
        metrics_url="http://127.0.0.1:9/metrics",
        services=[echo_service],
        call_timeout=0.5,
    )
    running = await start_gateway(app, "127.0.0.1", 0, shutdown_timeout=0.5)
    yield f"http://127.0.0.1:{running.port}"
    await running.stop()


async def _call(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with http.request(method, url, **kwargs) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json(), response


# --- the route table -------------------------------------------------------------------------


def test_jackpot_routes_come_from_the_annotations() -> None:
    routes = build_routes([jackpot_pb2.DESCRIPTOR.services_by_name["JackpotService"]])
    table = {(r.http_method, r.template): (r.method.name, r.body) for r in routes}
    assert table == {
        ("POST", "/api/jackpot/contribute"): ("Contribute", "*"),
        ("POST", "/api/jackpot/contribute:batch"): ("ContributeBatch", "*"),
        ("POST", "/api/jackpot/win"): ("Win", "*"),
        ("GET", "/api/jackpot/pools"): ("GetPools", ""),
        ("GET", "/api/jackpot/pools:watch"): ("WatchPools", ""),
        ("GET", "/api/jackpot/statistics"): ("GetStatistics", ""),
        ("GET", "/api/jackpot/config"): ("GetConfig", ""),
        ("PUT", "/api/jackpot/config"): ("UpdateConfig", "*"),
        ("GET", "/api/jackpot/ledger/{leaf_index}/proof"): ("GetLedgerProof", ""),
        ("GET", "/api/jackpot/wins"): ("ListWins", ""),
        ("POST", "/api/jackpot/pools/{group}:suspend"): ("SuspendPool", "*"),
        ("POST", "/api/jackpot/pools/{group}:resume"): ("ResumePool", "*"),
    }
    assert {r.grpc_path for r in routes} >= {"/jackpot.v1.JackpotService/Contribute"}


def test_a_test_only_proto_gets_its_routes(echo_service: ServiceDescriptor) -> None:
    routes = build_routes([echo_service])
    table = {(r.http_method, r.template): r.method.name for r in routes}
    assert table == {
        ("POST", "/v1/echo"): "Echo",
        ("GET", "/v1/echo/{text}"): "Echo",  # additional binding
        ("GET", "/v1/{name=shelves/*/books/*}"): "GetBook",
        ("PATCH", "/v1/books/{book.id}"): "UpdateBook",
        ("POST", "/v1/fail"): "Fail",
        ("GET", "/v1/stream"): "Stream",  # server streaming: SSE or NDJSON
    }  # Hidden has no annotation: not routed
    echo = next(r for r in routes if r.method.name == "Echo")
    assert echo.request_class.DESCRIPTOR.full_name == "gatewaytest.v1.EchoRequest"
    assert echo.grpc_path == "/gatewaytest.v1.EchoService/Echo"


def test_path_templates(echo_service: ServiceDescriptor) -> None:
    book = echo_service.methods_by_name["GetBook"].input_type
    router, openapi, params = parse_template("/v1/{name=shelves/*/books/*}:read", book)
    assert router == "/v1/{p0:shelves/[^/]+/books/[^/]+}:read"
    assert openapi == "/v1/{name}:read"
    assert [(p.placeholder, p.field_path) for p in params] == [("p0", "name")]
    router, _, _ = parse_template("/v1/*/files/{name=**}", book)
    assert router == "/v1/{_w0:[^/]+}/files/{p0:.+}"
    for bad in ("v1/{name}", "/v1/{missing}", "/v1/{name", "/v1/{na-me}"):
        with pytest.raises(ValueError):
            parse_template(bad, book)


def test_conflicting_routes_are_refused(echo_service: ServiceDescriptor) -> None:
    with pytest.raises(ValueError, match="declared by both"):
        build_routes([echo_service, echo_service])


def test_metadata_forwarding_filters_what_grpc_cannot_carry() -> None:
    headers = {
        "Authorization": "Bearer t",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "Grpc-Metadata-Tenant": "acme",
        "Grpc-Metadata-Evil-Bin": "AAAA",
        "Grpc-Metadata-Grpc-Timeout": "1S",
        "Grpc-Metadata-Bad": "caf\u00e9",
        "Cookie": "secret",
    }
    assert dict(forwarded_metadata(headers)) == {
        "authorization": "Bearer t",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tenant": "acme",
    }


# --- requests through a real gateway to the test service --------------------------------------


async def test_body_star_maps_json_onto_the_request(http: aiohttp.ClientSession, base: str) -> None:
    payload = {"text": "hi", "count": 7, "loud": True, "tags": ["a"], "color": "COLOR_RED"}
    status, body, _ = await _call(http, "POST", base + "/v1/echo", json=payload)
    assert status == 200
    assert body["text"] == "hi" and body["count"] == "7" and body["loud"] is True
    assert body["tags"] == ["a"] and body["color"] == "COLOR_RED"
    assert body["idempotencyKey"] == ""  # unset fields are emitted


async def test_proto_field_names_are_accepted_too(http: aiohttp.ClientSession, base: str) -> None:
    payload = {"idempotency_key": "k1", "inner": {"depth": 3}}
    status, body, _ = await _call(http, "POST", base + "/v1/echo", json=payload)
    assert status == 200
    assert body["idempotencyKey"] == "k1" and body["depth"] == 3


async def test_query_and_path_parameters(http: aiohttp.ClientSession, base: str) -> None:
    query = "count=3&loud=true&tags=a&tags=b&color=COLOR_RED&inner.depth=2&text=ignored"
    status, body, _ = await _call(http, "GET", f"{base}/v1/echo/hello?{query}")
    assert status == 200
    assert body["text"] == "hello"  # the path variable, not the query
    assert body["count"] == "3" and body["loud"] is True
    assert body["tags"] == ["a", "b"] and body["color"] == "COLOR_RED" and body["depth"] == 2


@pytest.mark.parametrize(
    ("query", "field"),
    [("loud=maybe", "loud"), ("count=ten", "count"), ("count=1&count=2", "count")],
)
async def test_bad_query_parameters_are_400(
    http: aiohttp.ClientSession, base: str, query: str, field: str
) -> None:
    status, body, _ = await _call(http, "GET", f"{base}/v1/echo/x?{query}")
    assert status == 400
    assert body["code"] == 3 and field in body["message"]


async def test_multi_segment_path_variable(http: aiohttp.ClientSession, base: str) -> None:
    status, body, _ = await _call(http, "GET", base + "/v1/shelves/s1/books/b2")
    assert status == 200 and body["id"] == "shelves/s1/books/b2"
    status, body, _ = await _call(http, "GET", base + "/v1/shelves/s1")
    assert status == 404 and body["code"] == 5


async def test_body_field_and_nested_path_variable(http: aiohttp.ClientSession, base: str) -> None:
    status, body, _ = await _call(
        http,
        "PATCH",
        base + "/v1/books/42?reason=typo",
        json={"id": "overridden", "title": "Dune", "published": "2020-01-02T03:04:05Z"},
    )
    assert status == 200
    assert body == {"id": "42", "title": "Dune (typo)", "published": "2020-01-02T03:04:05Z"}


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b'{"text": "a", "text": "b"}', "appears twice"),
        (b'{"inner": ' * 3000 + b"{}" + b"}" * 3000, "JSON"),
        (b"\xff\xfe", "UTF-8"),
        (b'{"count": "1' + b"0" * 5000 + b'"}', "count"),
    ],
)
async def test_hostile_bodies_are_400(
    http: aiohttp.ClientSession,
    echo_service: ServiceDescriptor,
    echo_target: str,
    payload: bytes,
    words: str,
) -> None:
    app = create_gateway_app(
        echo_target,
        max_body_bytes=1 << 20,
        metrics_url="http://127.0.0.1:9/metrics",
        services=[echo_service],
    )
    running = await start_gateway(app, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{running.port}/v1/echo"
        status, body, _ = await _call(http, "POST", url, data=payload)
    finally:
        await running.stop()
    assert status == 400, body
    assert body["code"] == 3 and words in body["message"]


async def test_headers_become_metadata_and_fields(http: aiohttp.ClientSession, base: str) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = {
        "Authorization": "Bearer abc",
        "traceparent": traceparent,
        "Idempotency-Key": "from-header",
        "Grpc-Metadata-Tenant": "acme",
    }
    status, body, _ = await _call(http, "POST", base + "/v1/echo", json={}, headers=headers)
    assert status == 200
    assert body["metadata"]["authorization"] == "Bearer abc"
    assert body["metadata"]["traceparent"] == traceparent
    assert body["metadata"]["tenant"] == "acme"
    assert body["idempotencyKey"] == "from-header"


EXPECTED_HTTP = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
}


def test_status_table_matches_grpc_gateway() -> None:
    assert {c.name: s for c, s in HTTP_STATUS.items() if c.name != "OK"} == EXPECTED_HTTP


@pytest.mark.parametrize("name", sorted(EXPECTED_HTTP))
async def test_grpc_status_becomes_http_status(
    http: aiohttp.ClientSession, base: str, name: str
) -> None:
    code = grpc.StatusCode[name].value[0]
    payload = {"code": code, "message": f"boom {name}"}
    status, body, _ = await _call(http, "POST", base + "/v1/fail", json=payload)
    assert status == EXPECTED_HTTP[name]
    assert body == {"code": code, "message": f"boom {name}", "details": []}


async def test_rich_details_and_retry_after(http: aiohttp.ClientSession, base: str) -> None:
    payload = {"code": 8, "message": "slow down", "badFields": ["a.b"], "retrySeconds": 3}
    status, body, response = await _call(http, "POST", base + "/v1/fail", json=payload)
    assert status == 429
    assert response.headers["Retry-After"] == "3"
    assert body["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "a.b", "description": "bad"}],
        },
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"},
    ]


async def test_call_timeout_is_504(http: aiohttp.ClientSession, base: str) -> None:
    payload = {"code": 13, "sleepMs": 2000}
    status, body, _ = await _call(http, "POST", base + "/v1/fail", json=payload)
    assert status == 504 and body["code"] == 4


def _self_signed(directory: Path) -> tuple[bytes, bytes]:
    key, cert = self_signed(directory)
    return key.read_bytes(), cert.read_bytes()


async def test_tls_channel_to_the_grpc_server(
    http: aiohttp.ClientSession, echo_service: ServiceDescriptor, tmp_path: Path
) -> None:
    key, cert = _self_signed(tmp_path)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_echo_handlers(echo_service),))
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
    await server.start()
    app = create_gateway_app(
        f"localhost:{port}",
        max_body_bytes=1024,
        metrics_url="http://127.0.0.1:9/metrics",
        services=[echo_service],
        credentials=grpc.ssl_channel_credentials(root_certificates=cert),
    )
    running = await start_gateway(app, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{running.port}/v1/echo"
        status, body, _ = await _call(http, "POST", url, json={"text": "over tls"})
    finally:
        await running.stop()
        await server.stop(0)
    assert status == 200 and body["text"] == "over tls"


# --- OpenAPI ---------------------------------------------------------------------------------


def test_openapi_from_a_test_only_proto(echo_service: ServiceDescriptor) -> None:
    doc = openapi_document(build_routes([echo_service]))
    json.dumps(doc)  # serialisable
    assert set(doc["paths"]) == {
        "/v1/echo",
        "/v1/echo/{text}",
        "/v1/{name}",
        "/v1/books/{book.id}",
        "/v1/fail",
        "/v1/stream",
    }
    get_echo = doc["paths"]["/v1/echo/{text}"]["get"]
    params = {(p["name"], p["in"]) for p in get_echo["parameters"]}
    assert params == {
        ("text", "path"),
        ("count", "query"),
        ("loud", "query"),
        ("tags", "query"),
        ("color", "query"),
        ("inner.depth", "query"),
        ("idempotencyKey", "query"),
        ("Idempotency-Key", "header"),
    }
    assert doc["paths"]["/v1/echo"]["post"]["operationId"] == "EchoService_Echo"
    assert get_echo["operationId"] == "EchoService_Echo2"
    patch = doc["paths"]["/v1/books/{book.id}"]["patch"]
    ref = "#/components/schemas/gatewaytest.v1.Book"
    assert patch["requestBody"]["content"]["application/json"]["schema"] == {"$ref": ref}
    schemas = doc["components"]["schemas"]
    assert schemas["gatewaytest.v1.Book"]["properties"]["published"] == {
        "type": "string",
        "format": "date-time",
        "nullable": True,  # an unset message field is emitted as null
    }
    assert schemas["gatewaytest.v1.EchoReply"]["properties"]["metadata"] == {
        "type": "object",
        "additionalProperties": {"type": "string"},
    }
    assert schemas["gatewaytest.v1.Color"] == {
        "type": "string",
        "enum": ["COLOR_UNSPECIFIED", "COLOR_RED"],
    }


# --- server streaming ------------------------------------------------------------------------


async def test_a_streaming_rpc_is_one_json_result_a_line_until_it_ends(
    http: aiohttp.ClientSession, base: str
) -> None:
    async with http.get(base + "/v1/stream?text=hi&count=2") as response:
        assert response.status == 200
        assert response.content_type == "application/x-ndjson"
        lines = [json.loads(line) async for line in response.content]
    assert [line["result"]["text"] for line in lines] == ["hi 0", "hi 1"]


async def test_a_stream_dropped_before_its_first_message_is_503(
    http: aiohttp.ClientSession, base: str
) -> None:
    """CANCELLED although the HTTP caller is still there: the server dropped the call (a
    flood of new streams), so the caller should retry, as after 503; an EventSource gives
    up for good on any other status."""
    async with http.get(base + "/v1/stream?text=dropped") as response:
        assert response.status == 503
        body = await response.json()
    assert body["code"] == grpc.StatusCode.UNAVAILABLE.value[0]
