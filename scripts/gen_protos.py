"""Generate Python code and mypy stubs from protos/ into generated/ (the only writer there)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import google.api
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "generated"
# The googleapis-common-protos wheel ships google/api/*.proto next to its modules.
BIN = Path(sys.executable).parent
GOOGLEAPIS = Path(next(iter(google.api.__path__))).parent.parent
DESCRIPTOR_SET = "jackpot.binpb"


def main() -> int:
    shutil.rmtree(OUT / "jackpot", ignore_errors=True)
    (OUT / "jackpot" / "v1").mkdir(parents=True)
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    wkt = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{GOOGLEAPIS}",
        f"-I{wkt}",
        f"--python_out={OUT}",
        f"--grpc_python_out={OUT}",
        # mypy-protobuf's plugins live beside this interpreter, which may not be on PATH.
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={OUT}",
        f"--mypy_grpc_out={OUT}",
        # The descriptors with their comments (source info), shipped as package data: the
        # gateway's OpenAPI document takes its descriptions from them.
        f"--descriptor_set_out={OUT / 'jackpot' / 'v1' / DESCRIPTOR_SET}",
        "--include_source_info",
        *sources,
    ]
    if protoc.main(args) != 0:
        print("protoc failed", file=sys.stderr)
        return 1
    # Regular packages (not namespace ones) so mypy and setuptools see them plainly.
    root = OUT / "jackpot"
    for folder in [root, *(d for d in root.rglob("*") if d.is_dir())]:
        (folder / "__init__.py").touch()
    (root / "py.typed").touch()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
