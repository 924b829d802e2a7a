"""The package as a user installs it: the wheel, built from this tree and unpacked outside
it, runs from an empty directory (migrations and bots inside it, no top-level ``bots``)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _wheel(out: Path) -> Path:
    # No build isolation: hatchling is in the dev lock, so this works offline.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    [built] = out.glob("mailbot_server-*.whl")
    return built


def test_the_wheel_holds_the_package_its_bots_and_migrations_and_nothing_generic(
    tmp_path: Path,
) -> None:
    built = _wheel(tmp_path / "dist")
    names = zipfile.ZipFile(built).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"mailbot"}
    assert "mailbot/bots/default.py" in names
    assert any(n.startswith("mailbot/migrations/versions/0001") for n in names)
    assert "mailbot/web/static/app.js" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)

    site, empty = tmp_path / "site", tmp_path / "empty"
    zipfile.ZipFile(built).extractall(site)
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update(PYTHONPATH=str(site), MAILBOT_CONFIG="", MAILBOT_DNS="offline")

    def mailbot(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mailbot", *args], cwd=empty, env=env,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    where = subprocess.run(
        [sys.executable, "-c", "import mailbot; print(mailbot.__file__)"],
        cwd=empty, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(site))  # the unpacked wheel, not this tree
    listed = mailbot("bots")
    assert listed.returncode == 0 and "comments" in listed.stdout, listed.stderr
    made = mailbot("reply-address", "k-1", "ann@example.com")
    assert made.returncode == 0 and made.stdout.startswith("reply+"), made.stderr
    shown = mailbot("conversation", "show", "k-1")
    assert shown.returncode == 0 and "ann@example.com" in shown.stdout, shown.stderr
