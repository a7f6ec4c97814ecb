#!/usr/bin/env python3
"""Generate the gRPC/protobuf modules of clerkmirror_client from ../../proto.

Run with the virtualenv's interpreter (it has the pinned grpcio-tools):

    .venv/bin/python generate.py          # (re)write src/clerkmirror_client/v1/
    .venv/bin/python generate.py --check  # exit 1 if the committed code is stale

protoc writes `clerkmirror/v1/*_pb2.py` importing each other as `from clerkmirror.v1 import
x_pb2`. They are flattened into the package's `v1/` folder and those imports are rewritten to
relative ones (`from . import x_pb2`), so the generated code needs no `sys.path` change and adds
no top-level `clerkmirror` package. `google/protobuf/*` comes with the protobuf runtime;
`google/rpc/*` (ErrorInfo) comes from googleapis-common-protos and is not generated here.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_ROOT = (HERE / ".." / ".." / "proto").resolve()
PROTO_PACKAGE_DIR = Path("clerkmirror") / "v1"
OUT_DIR = HERE / "src" / "clerkmirror_client" / "v1"
STALE_MESSAGE = "generated code is stale: run `.venv/bin/python generate.py` in clients/python"

INIT_TEXT = '''"""Generated from proto/clerkmirror/v1 by clients/python/generate.py. Do not edit."""
'''

# `from clerkmirror.v1 import watch_pb2 as clerkmirror_dot_v1_dot_watch__pb2`
IMPORT_RE = re.compile(r"^from clerkmirror\.v1 import (\w+)", re.MULTILINE)


def generate_into(out_dir: Path) -> None:
    """Runs protoc over every proto under proto/clerkmirror/v1 and writes the flattened,
    import-rewritten modules into out_dir (which must exist and be empty)."""
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError:
        sys.exit("grpcio-tools is not installed: run ./install.sh, then .venv/bin/python generate.py")

    protos = sorted((PROTO_ROOT / PROTO_PACKAGE_DIR).glob("*.proto"))
    if not protos:
        sys.exit(f"no .proto files under {PROTO_ROOT / PROTO_PACKAGE_DIR}")
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"

    with tempfile.TemporaryDirectory(prefix="clerkmirror-protoc-") as raw:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={raw}",
            f"--grpc_python_out={raw}",
            f"--pyi_out={raw}",
            # Relative names keep absolute paths of this machine out of the output.
            *[str(p.relative_to(PROTO_ROOT)) for p in protos],
        ]
        cwd = os.getcwd()
        os.chdir(PROTO_ROOT)
        try:
            code = protoc.main(args)
        finally:
            os.chdir(cwd)
        if code != 0:
            sys.exit(f"protoc failed (exit {code})")

        generated = sorted((Path(raw) / PROTO_PACKAGE_DIR).iterdir())
        unexpected = [p for p in Path(raw).rglob("*") if p.is_file() and p.parent != Path(raw) / PROTO_PACKAGE_DIR]
        if unexpected:
            sys.exit(f"protoc wrote files outside {PROTO_PACKAGE_DIR}: {unexpected}")
        for src in generated:
            text = src.read_text(encoding="utf-8")
            text = IMPORT_RE.sub(r"from . import \1", text)
            leftover = [line for line in text.splitlines() if re.match(r"\s*(from|import)\s+clerkmirror\b", line)]
            if leftover:
                sys.exit(f"{src.name}: import not rewritten: {leftover}")
            (out_dir / src.name).write_text(text, encoding="utf-8")
    (out_dir / "__init__.py").write_text(INIT_TEXT, encoding="utf-8")


def differences(expected: Path, actual: Path) -> list[str]:
    """Names of files that differ, are missing, or are extra in actual (ignoring __pycache__)."""
    def files(d: Path) -> set[str]:
        if not d.is_dir():
            return set()
        return {p.name for p in d.iterdir() if p.is_file()}

    want, have = files(expected), files(actual)
    out = [f"missing: {n}" for n in sorted(want - have)]
    out += [f"extra: {n}" for n in sorted(have - want)]
    out += [f"differs: {n}" for n in sorted(want & have) if not filecmp.cmp(expected / n, actual / n, shallow=False)]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare freshly generated code with the committed files")
    opts = parser.parse_args()

    if opts.check:
        with tempfile.TemporaryDirectory(prefix="clerkmirror-gen-") as tmp:
            fresh = Path(tmp)
            generate_into(fresh)
            diffs = differences(fresh, OUT_DIR)
        if diffs:
            for d in diffs:
                print(f"  {d}", file=sys.stderr)
            print(STALE_MESSAGE, file=sys.stderr)
            return 1
        print(f"generated code is up to date ({OUT_DIR.relative_to(HERE)})")
        return 0

    OUT_DIR.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="clerkmirror-gen-", dir=OUT_DIR.parent) as tmp:
        fresh = Path(tmp)
        generate_into(fresh)
        if OUT_DIR.exists():
            shutil.rmtree(OUT_DIR)
        shutil.copytree(fresh, OUT_DIR)
    print(f"wrote {OUT_DIR.relative_to(HERE)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
