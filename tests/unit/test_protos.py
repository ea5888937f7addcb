"""The contracts pass buf's lint and document every service and RPC."""

from __future__ import annotations

import subprocess
from pathlib import Path

from google.protobuf import descriptor_pb2

from ops.servers import venv_bin

REPO = Path(__file__).resolve().parents[2]
# Field numbers in FileDescriptorProto / ServiceDescriptorProto, for source locations.
FILE_SERVICE = 6
SERVICE_METHOD = 2


def _buf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv_bin("buf")), *args], cwd=REPO, capture_output=True, text=True, check=False
    )


def test_buf_lint_passes() -> None:
    result = _buf("lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_every_service_and_rpc_has_a_doc_comment(tmp_path: Path) -> None:
    image = tmp_path / "image.binpb"
    result = _buf("build", "--as-file-descriptor-set", "-o", str(image))
    assert result.returncode == 0, result.stderr
    files = descriptor_pb2.FileDescriptorSet.FromString(image.read_bytes()).file
    ours = [f for f in files if f.name.startswith("lastmile/")]
    assert ours, "buf built no lastmile protos"

    undocumented = []
    services = 0
    for file in ours:
        comments = {
            tuple(loc.path): loc.leading_comments.strip() for loc in file.source_code_info.location
        }
        for i, service in enumerate(file.service):
            services += 1
            if not comments.get((FILE_SERVICE, i)):
                undocumented.append(service.name)
            for j, method in enumerate(service.method):
                if not comments.get((FILE_SERVICE, i, SERVICE_METHOD, j)):
                    undocumented.append(f"{service.name}.{method.name}")
    assert services >= 8
    assert undocumented == []
