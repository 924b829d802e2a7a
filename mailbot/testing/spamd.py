"""A real SpamAssassin ``spamd`` for tests and benchmarks, on a free loopback port.

It needs no network: a configuration of its own (written to a temporary directory, the
machine's ``/etc/spamassassin`` is not read) loads only the plugins that work offline, turns
DNS and rule updates off (``--local``, ``dns_available no``), and keeps the Bayes database in
that directory, learning only when told (``--allow-tell``, no auto-learning).

Example::

    with Spamd() as spamd:                       # waits for "server started on"
        settings = settings_for(tmp_path, sink, spamd=spamd.address)
        ...
        spamd.stop()                             # spamd down, mid-test
        spamd.start()                            # back, on the same port

:func:`spamd_binary` says whether Debian's ``spamd`` is installed; tests skip without it,
except in CI (``CI=true``), where its absence is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

# Offline plugins only: no DNS blocklists, Razor, Pyzor, SPF or DKIM lookups.
_PLUGINS = """\
loadplugin Mail::SpamAssassin::Plugin::Check
loadplugin Mail::SpamAssassin::Plugin::Bayes
loadplugin Mail::SpamAssassin::Plugin::BodyEval
loadplugin Mail::SpamAssassin::Plugin::HTMLEval
loadplugin Mail::SpamAssassin::Plugin::HeaderEval
loadplugin Mail::SpamAssassin::Plugin::MIMEEval
loadplugin Mail::SpamAssassin::Plugin::RelayEval
loadplugin Mail::SpamAssassin::Plugin::URIEval
loadplugin Mail::SpamAssassin::Plugin::WLBLEval
loadplugin Mail::SpamAssassin::Plugin::MIMEHeader
loadplugin Mail::SpamAssassin::Plugin::ReplaceTags
loadplugin Mail::SpamAssassin::Plugin::FreeMail
loadplugin Mail::SpamAssassin::Plugin::ImageInfo
loadplugin Mail::SpamAssassin::Plugin::VBounce
loadplugin Mail::SpamAssassin::Plugin::HTTPSMismatch
loadplugin Mail::SpamAssassin::Plugin::URIDetail
"""

_LOCAL_CF = """\
dns_available no
use_bayes 1
bayes_auto_learn 0
bayes_path {home}/bayes
"""

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def spamd_binary() -> str | None:
    """The ``spamd`` program (Debian installs it in /usr/sbin, often not on a user's PATH)."""
    return shutil.which("spamd") or shutil.which("spamd", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Spamd:
    """One ``spamd`` process; :meth:`stop` and :meth:`start` again keep the port and data."""

    def __init__(self, children: int = 2, ready_timeout: float = 120.0) -> None:
        binary = spamd_binary()
        if binary is None:
            raise FileNotFoundError("spamd is not installed (Debian: apt-get install spamd)")
        self.binary = binary
        self.children = children
        self.ready_timeout = ready_timeout
        self.port = free_port()
        # Not under pytest's tmp_path: spamd started as root serves as "nobody", which must
        # reach the Bayes files, and pytest's directories are private to their owner.
        self.dir = Path(tempfile.mkdtemp(prefix="mailbot-spamd-"))
        self.dir.chmod(0o755)
        self.conf = self.dir / "conf"
        self.home = self.dir / "home"
        self.conf.mkdir()
        self.home.mkdir()
        self.home.chmod(0o777)
        (self.conf / "init.pre").write_text(_PLUGINS)
        (self.conf / "local.cf").write_text(_LOCAL_CF.format(home=self.home))
        self.log = self.dir / "spamd.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def bayes_path(self) -> Path:
        return self.home / "bayes"

    def start(self) -> None:
        if self._process is not None:
            return
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    "--local",
                    "--allow-tell",
                    "--nouser-config",
                    f"--listen=127.0.0.1:{self.port}",
                    "--syslog=stderr",
                    f"--siteconfigpath={self.conf}",
                    f"--helper-home-dir={self.home}",
                    f"--max-children={self.children}",
                    f"--min-children={min(self.children, 2)}",
                    f"--pidfile={self.dir / 'spamd.pid'}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_ready(offset)

    def _wait_ready(self, offset: int) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            with self.log.open("rb") as log:
                log.seek(offset)
                if b"server started on" in log.read():
                    return
            if self._process is not None and self._process.poll() is not None:
                break
            time.sleep(0.05)
        tail = self.log.read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"spamd did not start; its log ends with:\n{tail}")

    def stop(self) -> None:
        """Stop spamd and its children; the port is closed when this returns."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its own group: spamd and its children
            process.wait()

    def bayes_counts(self) -> dict[str, int]:
        """``nspam`` and ``nham`` of the Bayes database, read with ``sa-learn --dump magic``."""
        if not Path(f"{self.bayes_path}_toks").exists():
            return {"nspam": 0, "nham": 0}  # nothing learned yet: sa-learn would fail
        found = subprocess.run(
            ["sa-learn", f"--siteconfigpath={self.conf}", "--dump", "magic"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        counts = {"nspam": 0, "nham": 0}
        for line in found.splitlines():
            parts = line.split()
            if len(parts) >= 6 and parts[-1] in counts:
                counts[parts[-1]] = int(parts[2])
        return counts

    def __enter__(self) -> Spamd:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
