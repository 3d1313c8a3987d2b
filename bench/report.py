"""The benchmark's tables: printed as text, and written as markdown between marker comments of BENCHMARKS.md."""

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from bench.census import Census
from bench.load import Rate

# Phases of the rounds: per concurrency the server and its two yardsticks; per batch kind the server and bulk_write.
SINGLE_PHASES = ("server", "update_one", "express")
BATCH_PHASES = ("server", "bulk")
BATCH_LABELS = {"new": "new records (InsertOne)", "partial": "partial updates (UpdateOne by _id, $set)"}
TARGETS = {"round_trips": 1.6, "single_share": 0.80, "p99_ms": 50.0, "batch_share": 0.60, "express": 1.0,
           "verify_s": 60.0, "verify_rss_mb": 300.0}


@dataclass
class Table:
    """A titled table of strings."""

    title: str
    header: list[str]
    rows: list[list[str]]


def median(rates: list[Rate]) -> float:
    """The median units per second over rounds."""
    return statistics.median(rate.per_second for rate in rates)


def per_round(rates: list[Rate]) -> str:
    """The median, then each round's figure when there are several."""
    figures = ", ".join(f"{rate.per_second:,.0f}" for rate in rates)
    return f"{median(rates):,.0f}" + (f" ({figures})" if len(rates) > 1 else "")


def errors(rates: list[Rate]) -> str:
    """Over all rounds: refused (non-2xx, or refused by the database) / socket errors / queued (202, spooled)."""
    return " / ".join(f"{sum(getattr(rate, name) for rate in rates):,}" for name in ("refused", "broken", "queued"))


def p99(rates: list[Rate]) -> float:
    """The median over rounds of each round's 99th percentile, in ms."""
    return statistics.median(rate.p99_ms for rate in rates)


def share(part: float, whole: float) -> float:
    """part / whole; NaN when the whole is nothing (nothing measured: a ratio would mean nothing)."""
    return part / whole if whole else math.nan


def percent(ratio: float) -> str:
    return "n/a" if math.isnan(ratio) else f"{ratio:.0%}"


def peak_of(single: dict[int, dict[str, list[Rate]]]) -> int:
    """The concurrency where the server answered the most 2xx per second (median over rounds)."""
    return max(single, key=lambda c: median(single[c]["server"]))


def single_table(single: dict[int, dict[str, list[Rate]]]) -> Table:
    """Single writes of the mix at each concurrency, the server against its ceiling and the Express yardstick."""
    peak = peak_of(single)
    rows = []
    for c in sorted(single):
        server, ceiling, express = (single[c][phase] for phase in SINGLE_PHASES)
        rows.append([f"{c}{' (peak)' if c == peak else ''}", per_round(server), errors(server),
                     f"{statistics.median(r.p50_ms for r in server):.1f} / {p99(server):.1f}",
                     per_round(ceiling), errors(ceiling), f"{p99(ceiling):.1f}",
                     percent(share(median(server), median(ceiling))),
                     per_round(express), errors(express), f"{share(median(server), median(express)):.2f}"])
    return Table("Single writes of the mix (2xx answers or acknowledged writes per second; median (each round))",
                 ["C", "server 2xx/s", "server non-2xx / socket errors / 202 queued", "server p50 / p99 ms",
                  "update_one ceiling/s", "ceiling errors refused / socket / -", "ceiling p99 ms", "server / ceiling",
                  "Express yardstick/s", "Express errors", "server / Express"], rows)


def batch_table(batches: dict[str, dict[str, list[Rate]]], streams: int) -> Table:
    """Batch ingest through POST /api/sync/batch against bulk_write of the same documents."""
    rows = []
    for kind, phases in batches.items():
        server, bulk = phases["server"], phases["bulk"]
        rows.append([BATCH_LABELS[kind], per_round(server), errors(server), per_round(bulk), errors(bulk),
                     percent(share(median(server), median(bulk)))])
    return Table(f"Batch ingest, 500 operations per request, {streams} streams (documents/s; median (each round))",
                 ["batches of", "server docs/s", "server refused / socket errors / queued", "bulk_write docs/s",
                  "bulk errors refused / socket / -", "server / bulk_write"], rows)


def census_table(census: Census) -> Table:
    """Database round trips per request kind."""
    rows = [[count.label, f"{len(count.counts)}",
             f"{count.mean:.2f}" if count.counts else "n/a", f"{min(count.counts, default=0)}"
             f"-{max(count.counts, default=0)}", count.usual, f"{count.failed}"] for count in census.kinds.values()]
    rows.append(["weighted by the mix's shares", "", f"{census.weighted:.2f}", "", "", ""])
    return Table("Database round trips per request (in-process, commands sent by the request's own thread)",
                 ["request", "measured", "average", "range", "usual commands", "not counted (not 2xx, queued)"], rows)


def verify_table(at_scale: list[dict]) -> Table:
    """`flask fitkart verify` at each size (bench/verify_scale.py)."""
    rows = [[f"{r['rows']:,}", f"{r['verify_s']:.1f} s", f"{r['rows_per_s']:,.0f}", f"{r['peak_rss_mb']:.0f} MB",
             f"{sum(r['planted'].values()):,}: " + ("yes" if r["planted"] == r["found"] else f"NO, found {r['found']}")]
            for r in at_scale]
    return Table("Verify at scale (bench/verify_scale.py)",
                 ["rows (all six tables)", "verify wall time", "rows/s", "verify peak RSS", "drift planted = found"],
                 rows)


def verdict(met: bool | None, figure: float = 0.0) -> str:
    """met / not met; "not run" when it was skipped, "not measured" when nothing was done to compare."""
    if met is None:
        return "not run"
    return "not measured" if math.isnan(figure) else "met" if met else "not met"


def targets_table(single: dict[int, dict[str, list[Rate]]], batches: dict[str, dict[str, list[Rate]]],
                  census: Census | None, at_scale: list[dict]) -> Table:
    """Every target with its figure and whether it is met; single writes are judged at the peak concurrency."""
    peak = peak_of(single)
    server, ceiling, express = (median(single[peak][phase]) for phase in SINGLE_PHASES)
    latency = p99(single[peak]["server"])
    rows = []
    if census is not None:
        rows.append([f"round trips per request, weighted over the mix <= {TARGETS['round_trips']}",
                     f"{census.weighted:.2f}", verdict(census.weighted <= TARGETS["round_trips"])])
    ratio = share(server, ceiling)
    rows.append([f"single writes >= {TARGETS['single_share']:.0%} of the update_one ceiling at the same C "
                 f"(peak C={peak})", percent(ratio), verdict(ratio >= TARGETS["single_share"], ratio)])
    rows.append([f"p99 at peak throughput < {TARGETS['p99_ms']:.0f} ms (C={peak})", f"{latency:.1f} ms",
                 verdict(latency < TARGETS["p99_ms"])])
    for kind, phases in batches.items():
        ratio = share(median(phases["server"]), median(phases["bulk"]))
        rows.append([f"batch ingest >= {TARGETS['batch_share']:.0%} of bulk_write, {BATCH_LABELS[kind]}",
                     percent(ratio), verdict(ratio >= TARGETS["batch_share"], ratio)])
    ratio = share(server, express)
    rows.append([f"single writes / Express yardstick >= {TARGETS['express']:.1f} (C={peak})", f"{ratio:.2f}",
                 verdict(ratio >= TARGETS["express"], ratio)])
    million = next((r["verify_s"] for r in at_scale if r["rows"] == 1_000_000), None)
    rows.append([f"verify 1,000,000 rows < {TARGETS['verify_s']:.0f} s",
                 "not run" if million is None else f"{million:.1f} s",
                 verdict(None if million is None else million < TARGETS["verify_s"])])
    rss = max((r["peak_rss_mb"] for r in at_scale), default=None)
    rows.append([f"verify peak RSS < {TARGETS['verify_rss_mb']:.0f} MB (every size run)",
                 "not run" if rss is None else f"{rss:.0f} MB",
                 verdict(None if rss is None else rss < TARGETS["verify_rss_mb"])])
    return Table("Targets", ["target", "figure", "verdict"], rows)


def as_text(table: Table) -> str:
    """The table with aligned columns, for a terminal."""
    widths = [max(len(cell) for cell in column) for column in zip(table.header, *table.rows, strict=True)]
    lines = [table.title, "  ".join(cell.ljust(width) for cell, width in zip(table.header, widths, strict=True))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in table.rows]
    return "\n".join(lines)


def as_markdown(table: Table) -> str:
    """The table in GitHub markdown, its title as a bold line above it."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([f"**{table.title}**", "", line(table.header), line(["---"] * len(table.header)),
                      *(line(row) for row in table.rows)])


def write_section(path: Path, backend: str, content: str, bench: str = "bench.run") -> None:
    """Put `content` between this backend's markers inside the `bench` markers of `path`, leaving all else as it was.

    Each backend has its own section, so runs on different backends fill the file side by side. Markers
    missing from the file are added at its end.
    """
    begin, end = f"<!-- {bench}:begin -->", f"<!-- {bench}:end -->"
    text = path.read_text()
    if begin not in text or end not in text:
        text = text.rstrip("\n") + f"\n\n{begin}\n{end}\n"
    first, last = f"<!-- {bench}:{backend}:begin -->", f"<!-- {bench}:{backend}:end -->"
    section = f"{first}\n{content.strip()}\n{last}"
    if first in text and last in text:
        before, _, rest = text.partition(first)
        _, _, after = rest.partition(last)
        text = before + section + after
    else:
        before, _, after = text.partition(end)
        text = before + section + "\n" + end + after
    path.write_text(text)
