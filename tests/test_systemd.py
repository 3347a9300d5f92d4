"""systemd integration: sd_notify over a real socket, the unit file, signals."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.systemd import Notifier

from .conftest import ROOT, DaemonProcess, daemon_config_values, eventually, free_port, subprocess_env, write_config

UNIT = ROOT / "systemd" / "zalo-bridge.service"


def bound_socket(address: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    s.settimeout(5)
    return s


def test_notifier_path_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    sock = bound_socket(path)
    try:
        n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())})
        assert n.available and n.watchdog_s == 3.0
        assert n.ready("listening")
        assert sock.recv(1024) == b"READY=1\nSTATUS=listening"
        assert n.watchdog() and sock.recv(1024) == b"WATCHDOG=1"
        assert n.stopping() and sock.recv(1024) == b"STOPPING=1\nSTATUS=stopping"
        n.close()
    finally:
        sock.close()


def test_notifier_abstract_socket() -> None:
    name = f"zalo-bridge-test-{os.getpid()}"
    sock = bound_socket("\0" + name)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.status("hello") and sock.recv(1024) == b"STATUS=hello"
        n.close()
    finally:
        sock.close()


def test_notifier_is_silent_outside_systemd() -> None:
    n = Notifier({})
    assert not n.available and not n.ready() and n.watchdog_s is None
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_s is None


async def test_daemon_speaks_sd_notify_and_exits_cleanly_on_sigterm(tmp_path: Path, zsim: Any, csim: Any,
                                                                     zalo_url: str, ct_url: str) -> None:
    path = str(tmp_path / "notify")
    sock = bound_socket(path)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    port = free_port()
    cfg = write_config(tmp_path / "c.toml", daemon_config_values(tmp_path, zsim, zalo_url, ct_url, port))
    env = subprocess_env(zsim, csim, zsim.issue_tokens()[1], NOTIFY_SOCKET=path, WATCHDOG_USEC="600000")
    proc = DaemonProcess(cfg, env, port)
    await proc.start()
    try:
        messages: list[str] = []

        async def until(prefix: str) -> None:
            while not any(m.startswith(prefix) or f"\n{prefix}" in m for m in messages):
                messages.append((await asyncio.wait_for(loop.sock_recv(sock, 4096), 10)).decode())

        await until("READY=1")
        await until("WATCHDOG=1")
        await until("STATUS=backlog")
        assert await proc.terminate() == 0
        await until("STOPPING=1")
        assert proc.events("daemon_stopped")
    finally:
        sock.close()


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (make test installs Debian's systemd package)")
    return path


def _unit_for_this_checkout(tmp_path: Path) -> Path:
    # verify checks that ExecStart exists: point it at this checkout's venv.
    exe = ROOT / ".venv" / "bin" / "zalo-bridge"
    if not exe.exists():
        exe = Path(shutil.which("zalo-bridge") or "/bin/true")
    text = UNIT.read_text().replace("/opt/zalo-bridge/.venv/bin/zalo-bridge", str(exe))
    out = tmp_path / "zalo-bridge.service"
    out.write_text(text)
    return out


def test_unit_file_verifies(tmp_path: Path) -> None:
    tool = _tool("systemd-analyze")
    unit = _unit_for_this_checkout(tmp_path)
    res = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "zalo-bridge.service" not in res.stderr  # no warnings about our unit


def test_unit_file_exposure_is_low(tmp_path: Path) -> None:
    tool = _tool("systemd-analyze")
    unit = _unit_for_this_checkout(tmp_path)
    res = subprocess.run([tool, "security", "--offline=yes", str(unit)], capture_output=True, text=True)
    m = re.search(r"Overall exposure level for zalo-bridge.service: ([0-9.]+)", res.stdout)
    assert m, res.stdout[-2000:] + res.stderr
    assert float(m.group(1)) <= 2.0


def test_unit_file_contract() -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StateDirectory=zalo-bridge", "DynamicUser=yes",
                 "LoadCredential=ZALO_OA_SECRET_KEY:", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                 "NoNewPrivileges=yes", "RestrictAddressFamilies=", "SystemCallFilter=@system-service",
                 "CapabilityBoundingSet=\n"):
        assert line in text, line


async def test_sighup_reloads_templates(tmp_path: Path, zsim: Any, csim: Any, zalo_url: str, ct_url: str) -> None:
    port = free_port()
    path = tmp_path / "c.toml"
    write_config(path, daemon_config_values(tmp_path, zsim, zalo_url, ct_url, port))
    base = path.read_text()
    path.write_text(base + '\n[templates.hello]\ntype = "text"\ntext = "v1"\n')
    proc = await DaemonProcess(path, subprocess_env(zsim, csim, zsim.issue_tokens()[1]), port).start()
    try:
        uid = zsim.add_user().user_id
        from daemon.sim import WebhookSender

        from .conftest import WEBHOOK_PASSWORD, WEBHOOK_USER

        path.write_text(base + '\n[templates.hello]\ntype = "text"\ntext = "v2"\n')
        proc.proc.send_signal(1)  # SIGHUP
        await proc.wait_for_log("templates_reloaded")
        path.write_text(base + '\n[templates.hello]\ntype = "buttons"\ntext = "v3"\nbuttons = []\n')
        proc.proc.send_signal(1)
        await proc.wait_for_log("templates_reload_failed")  # invalid: the old templates stay
        async with aiohttp.ClientSession() as s:
            sender = WebhookSender(s, proc.url + "/webhooks/clevertap", WEBHOOK_USER, WEBHOOK_PASSWORD)
            status, _ = await sender.campaign(1, [{"identity": uid, "profileData": {"zalo_user_id": uid}}],
                                              {"zalo_template": "hello"})
            assert status == 200
        await eventually(lambda: zsim.messages, zsim.changed, what="message")
        assert zsim.messages[0]["message"] == {"text": "v2"}
    finally:
        assert await proc.terminate() == 0
