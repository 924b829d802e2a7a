"""The table benchmarks/throughput.py prints, and the targets of issue #10 it is read against."""

from __future__ import annotations

from dataclasses import dataclass

import server_stats as stats

PACED_RATE = 100  # messages/s offered in the paced run
IDLE = 1000  # idle connections

LEGEND = (
    "p50/p99: load rows, the client's MAIL → 250 after the data; end-to-end rows, "
    "accept → delivered from the inbound rows; idle rows, a whole normal session "
    "(connect → 250) while the idle ones are open (p99 column: the slowest of 50). "
    "RSS: peak of the server and its children during the row; memory rows, the growth "
    "(big message; × bare: growth over bare aiosmtpd's) or the main process with the "
    "connections open (idle). CPU ms/msg: the server's (and its children's) CPU time "
    "per message. CPU: % of one core over the row's wall time; others: every other "
    "process on the machine."
)


@dataclass
class Row:
    name: str
    rate: float | None = None
    p50: float | None = None  # ms
    p99: float | None = None  # ms
    ratio: float | None = None
    rss: float | None = None  # MiB
    server_cpu: float | None = None  # % of one core
    cpu_ms: float | None = None  # the server's CPU time per message
    client_cpu: float | None = None
    other_cpu: float | None = None  # the rest of the machine: other people's work disturbs
    offered: float | None = None  # the paced run: the rate the client managed to offer
    size: float | None = None  # the big message, MiB
    note: str = ""

    def cpu(self, usage: stats.Usage, client: float, messages: int) -> None:
        """CPU columns, % of one core over ``usage.wall``; ``client``: CPU seconds of the load.
        The server's CPU per message is the figure least disturbed by a busy machine."""
        self.server_cpu = 100 * usage.server / usage.wall
        self.cpu_ms = 1000 * usage.server / max(messages, 1)
        self.client_cpu = 100 * client / usage.wall
        self.other_cpu = 100 * max(0.0, usage.others - client) / usage.wall


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def percent(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}%"


def table(rows: list[Row]) -> str:
    lines = [
        "| row | msg/s | p50 ms | p99 ms | × bare | RSS MiB | CPU ms/msg "
        "| CPU: server | client | others |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {fmt(r.rate, '.0f')} | {fmt(r.p50, '.1f')} | {fmt(r.p99, '.1f')} "
            f"| {fmt(r.ratio, '.2f')} | {fmt(r.rss, '.0f')} | {fmt(r.cpu_ms, '.2f')} | "
            f"{percent(r.server_cpu)} | {percent(r.client_cpu)} | {percent(r.other_cpu)} |"
        )
    notes = [f"- {r.name}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + ([""] + notes if notes else []))


def targets(rows: list[Row]) -> list[str]:
    by = {r.name: r for r in rows}
    out = []

    def check(what: str, value: float | None, ok: bool) -> None:
        shown = "not measured" if value is None else f"{value:.2f}"
        out.append(f"- {what}: {shown} → {'met' if ok and value is not None else 'NOT met'}")

    for label in ("SQLite", "PostgreSQL"):
        accept = by.get(f"mailbot durable acceptance, {label}")
        e2e = by.get(f"mailbot end to end, {label}")
        paced = by.get(f"mailbot end to end at {PACED_RATE}/s offered, {label}")
        if accept is None or e2e is None or paced is None:
            continue
        check(f"{label} durable acceptance ≥ 0.6 × bare", accept.ratio, (accept.ratio or 0) >= 0.6)
        check(f"{label} end to end ≥ 300 msg/s", e2e.rate, (e2e.rate or 0) >= 300)
        check(
            f"{label} p99 accept→delivered at {PACED_RATE}/s offered ≤ 200 ms "
            f"(offered {paced.offered or 0:.0f}/s in fact)",
            paced.p99,
            (paced.p99 or 1e9) <= 200 and (paced.offered or 0) >= 0.95 * PACED_RATE,
        )
    pg, lite = "PostgreSQL", "SQLite"
    for what in ("durable acceptance", "end to end"):
        a, b = by.get(f"mailbot {what}, {pg}"), by.get(f"mailbot {what}, {lite}")
        if a and b and a.rate and b.rate:
            check(f"PostgreSQL {what} ≥ 0.7 × SQLite", a.rate / b.rate, a.rate / b.rate >= 0.7)
    big = next((r for r in rows if r.size is not None), None)
    if big is not None and big.rss is not None and big.size:
        check(
            f"{big.size:.1f} MiB message: peak RSS growth ≤ 3 × its size (× its size)",
            big.rss / big.size,
            big.rss <= 3 * big.size,
        )
    idle = by.get(f"{IDLE:,} idle connections, mailbot")
    if idle is not None:
        check(
            f"{IDLE:,} idle connections ≤ 200 MiB (main process, MiB)",
            idle.rss,
            (idle.rss or 1e9) <= 200,
        )
    return out
