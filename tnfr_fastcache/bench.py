"""Turn a pytest-benchmark JSON run into the "ours vs each peer" ratio table.

Usage::

    pytest benchmarks --benchmark-json=run.json
    python -m tnfr_fastcache.bench compare run.json [--compact] [--ours ours --ours ours-disk] [--json]

Benchmarks say who they measure with ``benchmark.extra_info["subject"]`` (``"ours"``,
``"ours-gzip"``, or a peer's name) and group the same work with ``group=``; see
``benchmarks/README.md``. Every number in the table is a median from the same run, and every
comparison is a ratio: ``speedup = peer median / ours median`` (above 1 means we are faster).
"""

import argparse
import json
import sys

__all__ = ["load_run", "ratio_rows", "format_table", "format_compact", "main"]


def _subject(bench):
    subject = (bench.get("extra_info") or {}).get("subject")
    if subject:
        return str(subject)
    # Benchmarks without the convention: the test name minus "test_" and the group's words.
    return bench["name"].removeprefix("test_")


def load_run(path):
    """Read a pytest-benchmark JSON file; return ``(machine_line, benchmarks)``."""
    with open(path, encoding="utf-8") as fh:
        run = json.load(fh)
    if "benchmarks" not in run:
        raise ValueError(f"{path} is not a pytest-benchmark JSON file (no 'benchmarks' key)")
    info = run.get("machine_info", {})
    cpu = info.get("cpu", {})
    machine = ", ".join(
        part
        for part in (
            cpu.get("brand_raw") or info.get("processor") or "",
            f"{cpu['count']} cores" if cpu.get("count") else "",
            f"Python {info.get('python_version', '?')}",
            info.get("system", ""),
            run.get("datetime", "")[:19],
        )
        if part
    )
    return machine, run["benchmarks"]


def ratio_rows(benchmarks):
    """One row per (group, our variant, peer): medians and the speedup of ours over the peer.

    Groups with no "ours" entry or no peer give no rows.
    """
    groups = {}
    for bench in benchmarks:
        if bench.get("stats") is None:  # --benchmark-disable runs record no stats
            continue
        groups.setdefault(bench.get("group") or bench["name"], []).append(bench)
    rows = []
    for group in sorted(groups):
        ours = [b for b in groups[group] if _subject(b).startswith("ours")]
        peers = [b for b in groups[group] if not _subject(b).startswith("ours")]
        for mine in sorted(ours, key=_subject):
            for peer in sorted(peers, key=_subject):
                m, p = mine["stats"]["median"], peer["stats"]["median"]
                nbytes = (mine.get("extra_info") or {}).get("nbytes")
                rows.append(
                    {
                        "group": group,
                        "ours": _subject(mine),
                        "ours_median_s": m,
                        "ours_gb_per_s": nbytes / m / 1e9 if nbytes and m > 0 else None,
                        "peer": _subject(peer),
                        "peer_median_s": p,
                        "speedup": p / m if m > 0 else float("inf"),
                    }
                )
    return rows


def _time(seconds):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_table(rows, machine):
    """Render ``rows`` as a Markdown table headed by the machine line."""
    lines = [
        f"Machine: {machine}",
        "",
        "| group | ours | median | GB/s | peer | peer median | speedup (peer/ours) |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        gbps = f"{row['ours_gb_per_s']:.2f}" if row["ours_gb_per_s"] else ""
        lines.append(
            f"| {row['group']} | {row['ours']} | {_time(row['ours_median_s'])} | {gbps} | "
            f"{row['peer']} | {_time(row['peer_median_s'])} | {row['speedup']:.2f}x |"
        )
    return "\n".join(lines)


def format_compact(rows, machine):
    """One line per (group, our variant), every peer's speedup in one column (the README's table)."""
    lines = [
        f"Machine: {machine}",
        "",
        "| group | ours | median | GB/s | speedup vs each peer (peer median / ours) |",
        "|---|---|---:|---:|---|",
    ]
    merged = {}
    for row in rows:
        merged.setdefault((row["group"], row["ours"]), []).append(row)
    for (group, ours), same in merged.items():
        first = same[0]
        gbps = f"{first['ours_gb_per_s']:.2f}" if first["ours_gb_per_s"] else ""
        peers = ", ".join(f"{r['peer']} {r['speedup']:.2f}x" for r in same)
        lines.append(f"| {group} | {ours} | {_time(first['ours_median_s'])} | {gbps} | {peers} |")
    return "\n".join(lines)


def main(argv=None):
    """Entry point of ``python -m tnfr_fastcache.bench``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m tnfr_fastcache.bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    compare = sub.add_parser("compare", help="ratio table of ours vs each peer from a pytest-benchmark JSON file")
    compare.add_argument("run", help="the file written by --benchmark-json or --benchmark-autosave")
    compare.add_argument("--json", action="store_true", help="print the rows as JSON instead of Markdown")
    compare.add_argument("--compact", action="store_true", help="one line per group and variant of ours")
    compare.add_argument(
        "--ours", action="append", metavar="SUBJECT", help="keep only these variants of ours (repeatable)"
    )
    args = parser.parse_args(argv)
    try:
        machine, benchmarks = load_run(args.run)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = ratio_rows(benchmarks)
    if args.ours:
        rows = [row for row in rows if row["ours"] in args.ours]
    if not rows:
        print(f"error: {args.run} has no group with both an 'ours' and a peer benchmark with stats", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"machine": machine, "rows": rows}, indent=2))
    else:
        print((format_compact if args.compact else format_table)(rows, machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
