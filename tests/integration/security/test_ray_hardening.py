"""The Ray head `datawave up` starts listens on loopback only, and refuses a driver without the
cluster token (see cluster/NETWORK.md)."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from datawave.datasource.config import DatawaveSettings

pytestmark = pytest.mark.ray

_LISTEN = "0A"


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, []))
    return out


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def _address(hex_addr: str) -> str:
    """An address from /proc/net/tcp{,6}: hex, each 32-bit word in host (little-endian) order."""
    raw = bytes.fromhex(hex_addr)
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _listening() -> dict[str, tuple[str, int]]:
    """inode -> (address, port) of every listening TCP socket on this machine."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] != _LISTEN:
                continue
            addr, port = cols[1].split(":")
            out[cols[9]] = (_address(addr), int(port, 16))
    return out


def test_every_ray_listener_is_on_loopback(core: dict[str, object]) -> None:
    pids = _descendants(int(core["ray_pid"]))  # type: ignore[call-overload]
    listening = _listening()
    owned = {}
    for pid in pids:
        for inode in _socket_inodes(pid) & listening.keys():
            owned[listening[inode]] = pid
    gcs_port = int(str(core["ray_address"]).rsplit(":", 1)[1])

    assert gcs_port in {port for _, port in owned}, "the GCS listener was not found"
    assert len(owned) >= 5  # GCS, raylet, object manager, agents, workers ...
    exposed = {
        f"{addr}:{port} ({Path(f'/proc/{pid}/comm').read_text().strip()})"
        for (addr, port), pid in owned.items()
        if not ipaddress.ip_address(addr).is_loopback
    }
    assert exposed == set(), f"Ray listens beyond loopback: {sorted(exposed)}"


def test_the_head_is_not_reachable_on_the_routable_address(core: dict[str, object]) -> None:
    port = int(str(core["ray_address"]).rsplit(":", 1)[1])
    routable = _routable_ip()
    if routable is None:
        pytest.skip("this machine has no non-loopback IPv4 address")

    with pytest.raises(OSError), socket.create_connection((routable, port), timeout=3):
        pass


def _routable_ip() -> str | None:
    """This machine's address on its default route (a UDP connect sends no packet)."""
    for probe in ("192.0.2.1", "10.255.255.254", "8.8.8.8"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect((probe, 9))
            except OSError:
                continue
            ip = s.getsockname()[0]
        if not ipaddress.ip_address(ip).is_loopback:
            return str(ip)
    return None


_DRIVER = """
import sys
import ray
try:
    ray.init(address=sys.argv[1], log_to_driver=False)
except Exception as exc:
    print("REFUSED", type(exc).__name__, exc)
    sys.exit(3)
print("JOINED")
"""


@pytest.mark.parametrize(
    ("case", "env"),
    [
        ("no token, auth off in the client", {}),
        ("wrong token", {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}),
    ],
)
def test_a_driver_without_the_cluster_token_is_refused(
    core: dict[str, object],
    core_settings: DatawaveSettings,
    tmp_path: Path,
    case: str,
    env: dict[str, str],
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    child_env = {**base, **env, "HOME": str(tmp_path),  # no ~/.ray/auth_token either
                 "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(core["ray_address"])],
        env=child_env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    out = proc.stdout + proc.stderr

    assert proc.returncode == 3, out[-2000:]
    assert "JOINED" not in proc.stdout
    assert "InvalidAuthToken" in out or "AuthenticationError" in out, out[-2000:]


def test_the_token_file_is_private(
    core_settings: DatawaveSettings, core: dict[str, object]
) -> None:
    token = core_settings.data_dir / "ray_token"

    assert token.stat().st_mode & 0o077 == 0
