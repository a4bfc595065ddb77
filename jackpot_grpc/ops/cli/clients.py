"""`jackpot clients add|list|revoke`: manage the clients file (JACKPOT_CLIENTS_FILE).

A running server picks up every change on its own (SIGHUP, or within a few seconds
without one). `add` prints the new token once: only its hash is kept. Every write is
read back before it replaces the file (an entry the server would not accept is refused);
entries edited in by hand that are invalid are kept as they are and listed as INVALID.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from jackpot_grpc.adapters import clients_file
from jackpot_grpc.config import Settings
from jackpot_grpc.domain.roles import ROLES
from jackpot_grpc.ops.output import emit_json, render_table
from jackpot_grpc.security.client_names import ADMIN_CLIENT, ANONYMOUS

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RESERVED = (ADMIN_CLIENT, ANONYMOUS)  # JACKPOT_ADMIN_TOKEN's client; open mode's caller


def _file(settings: Settings, args: argparse.Namespace) -> Path:
    path: Path | None = args.file or settings.auth.clients_file
    if path is None:
        raise clients_file.ClientsFileError("set JACKPOT_CLIENTS_FILE (or pass --file)")
    return path


def _failing(args: argparse.Namespace, message: str) -> int:
    if args.json:
        emit_json({"ok": False, "error": message})
    print(f"error: {message}", file=sys.stderr)
    return 1


def cmd_add(settings: Settings, args: argparse.Namespace) -> int:
    if not NAME.fullmatch(args.name) or args.name in RESERVED:
        return _failing(
            args,
            f"client name {args.name!r}: 1-64 letters, digits, '.', '_', '-', starting with a"
            f" letter or digit, and not one of {', '.join(RESERVED)}",
        )
    try:
        path = _file(settings, args)
        token = clients_file.add_client(
            path,
            args.name,
            args.role,
            cert_subjects=tuple(args.cert_subject or ()),
            token=not args.no_token,
        )
    except clients_file.ClientsFileError as exc:
        return _failing(args, str(exc))
    if args.json:
        emit_json({"client": args.name, "role": args.role, "token": token})
    elif token is not None:
        print(token)
    print(
        f"client {args.name!r} ({args.role}) added to {path}"
        + ("; the token above is shown only this once" if token else ""),
        file=sys.stderr,
    )
    return 0


def _row(entry: clients_file.Entry) -> dict[str, object]:
    r = entry.record
    if r is None:  # shown, so the operator sees it; it admits nobody
        return {
            "client": clients_file.name_of(entry.raw) or f"(entry {entry.position})",
            "roles": "",
            "token": False,
            "cert_subjects": "",
            "created_at": "",
            "status": f"INVALID {entry}",
        }
    return {
        "client": r.name,
        "roles": ",".join(r.roles),
        "token": r.token_sha256 is not None,
        "cert_subjects": ",".join(r.cert_subjects),
        "created_at": r.created_at,
        "status": "active" if r.active else f"revoked {r.revoked_at}",
    }


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    try:
        document = clients_file.read(_file(settings, args))
    except clients_file.ClientsFileError as exc:
        return _failing(args, str(exc))
    rows = [_row(entry) for entry in document.entries]
    if args.json:
        emit_json({"clients": rows})
    else:
        print(
            render_table(
                ("client", "roles", "token", "cert_subjects", "created_at", "status"), rows
            )
        )
    return 0


def cmd_revoke(settings: Settings, args: argparse.Namespace) -> int:
    try:
        path = _file(settings, args)
        record = clients_file.revoke_client(path, args.name)
    except clients_file.ClientsFileError as exc:
        return _failing(args, str(exc))
    if args.json:
        emit_json({"ok": True, "client": record.name, "revoked_at": record.revoked_at})
    else:
        print(f"client {record.name!r} revoked; running servers refuse it within seconds")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    clients = subparsers.add_parser("clients", help="add, list or revoke API clients")
    sub = clients.add_subparsers(dest="clients_command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text)
        parser.add_argument(
            "--file", type=Path, help="clients file (default: JACKPOT_CLIENTS_FILE)"
        )
        parser.add_argument("--json", action="store_true")
        return parser

    add = command("add", "create a client; prints its token once")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument(
        "--cert-subject",
        action="append",
        metavar="SUBJECT",
        help="a client certificate's CN or SAN that identifies this client (mTLS; repeatable)",
    )
    add.add_argument("--no-token", action="store_true", help="certificate only: no bearer token")
    add.set_defaults(func=cmd_add)

    list_ = command("list", "every client, its roles and status (never a token)")
    list_.set_defaults(func=cmd_list)

    revoke = command("revoke", "revoke a client: its token and certificate stop working")
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_revoke)
