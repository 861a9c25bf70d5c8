"""The command line: inspect and maintain a disk cache directory.

::

    python -m tnfr_fastcache stats DIR [--json]          entries and sizes per level
    python -m tnfr_fastcache ls DIR [--level L] [--json] one line per entry
    python -m tnfr_fastcache verify DIR [--fix] [--json] re-check every frame's checksums
    python -m tnfr_fastcache gc DIR [--max-disk-mb N]    expired, orphans, then the budget
    python -m tnfr_fastcache clear DIR [--level L]       remove entries

Also installed as ``tnfr-fastcache``. Exit codes: 0 success; 1 ``verify`` found problems
(also when ``--fix`` removed them); 2 an error (bad arguments, a directory that is not a
cache), printed as one line on stderr. Long operations show progress on stderr when it is
a terminal and stay quiet when piped.
"""

import argparse
import datetime
import json
import logging
import math
import os
import sys
import threading
import time

from .errors import FastCacheError
from .levels import CacheLevel, as_level

__all__ = ["main"]

PROG = "tnfr-fastcache"
EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2


class CommandError(Exception):
    """An error the user can fix; printed as one line, exit code 2."""


class _Progress:
    """Shows ``label ... 3.2 s`` on a terminal's stderr while a long call runs.

    The disk tier's maintenance calls do their work in one call, so this reports elapsed
    time (and the known amount of work in ``label``) rather than a fraction.
    """

    def __init__(self, label, stream=None):
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self._done = threading.Event()
        self._thread = None

    def _enabled(self):
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def _run(self, start):
        while not self._done.wait(0.2):
            self.stream.write(f"\r{self.label} ... {time.monotonic() - start:.1f} s")
            self.stream.flush()

    def __enter__(self):
        if self._enabled():
            self._thread = threading.Thread(target=self._run, args=(time.monotonic(),), daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info):
        if self._thread is not None:
            self._done.set()
            self._thread.join()
            # erase the progress line so the result starts on a clean line
            self.stream.write("\r\033[K")
            self.stream.flush()


def _size(nbytes):
    """``8.0 MiB`` style sizes for people; ``--json`` gives exact bytes."""
    value = float(nbytes)
    if abs(value) < 1024:
        return f"{int(value)} B"
    for unit in ("KiB", "MiB"):
        value /= 1024
        if abs(value) < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} GiB"


def _when(timestamp):
    if timestamp is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _open(directory):
    """The disk cache in ``directory``, which must already be one."""
    from .backends._diskindex import INDEX_NAME
    from .backends.disk import CompressedPersistentCache

    if not os.path.isdir(directory):
        raise CommandError(f"{directory}: no such directory")
    if not os.path.isfile(os.path.join(directory, INDEX_NAME)):
        raise CommandError(f"{directory}: not a tnfr_fastcache disk cache (no {INDEX_NAME})")
    return CompressedPersistentCache(directory, create=False)


def _emit_json(data, out):
    json.dump(data, out, indent=2, sort_keys=True)
    out.write("\n")


# -- commands --------------------------------------------------------------------------


def _empty_row():
    return dict(entries=0, raw_bytes=0, stored_bytes=0, expired=0, cost=0.0)


def cmd_stats(args, out):
    """Entries, raw and stored bytes, compression and expiry per level."""
    cache = _open(args.dir)
    try:
        now = time.time()
        levels = {level.value: _empty_row() for level in CacheLevel}
        codecs = {}
        with _Progress(f"reading the index of {args.dir}"):
            for entry in cache.entries():
                row = levels.setdefault(entry.level, _empty_row())
                row["entries"] += 1
                row["raw_bytes"] += entry.raw_size
                row["stored_bytes"] += entry.stored_size
                row["cost"] += entry.computation_cost
                if entry.expires is not None and entry.expires <= now:
                    row["expired"] += 1
                codecs[entry.codec] = codecs.get(entry.codec, 0) + 1
        stats = cache.get_stats()
    finally:
        cache.close()
    for row in levels.values():
        row["compression_ratio"] = row["raw_bytes"] / row["stored_bytes"] if row["stored_bytes"] else 1.0
    total = {
        name: sum(row[name] for row in levels.values())
        for name in ("entries", "raw_bytes", "stored_bytes", "expired", "cost")
    }
    total["compression_ratio"] = (
        total["raw_bytes"] / total["stored_bytes"] if total["stored_bytes"] else 1.0
    )
    report = {
        "cache_dir": stats["cache_dir"],
        "tier": "disk",
        "levels": levels,
        "total": total,
        "codecs": codecs,
        "disk_files": stats["disk_files"],
        "disk_size_bytes": stats["disk_size_bytes"],
        "max_disk_mb": stats["max_disk_mb"],
        "eviction": stats["eviction"],
    }
    if args.json:
        _emit_json(report, out)
        return EXIT_OK
    budget = report["max_disk_mb"]
    out.write(f"Disk cache {report['cache_dir']}\n")
    out.write(
        f"budget: {'unbounded' if budget is None else _size(budget * 1024 * 1024)}"
        f"   eviction: {report['eviction']}\n\n"
    )
    header = f"{'level':<18}{'entries':>9}{'stored':>12}{'raw':>12}{'ratio':>8}{'expired':>9}"
    out.write(header + "\n" + "-" * len(header) + "\n")
    for name, row in [*levels.items(), ("total", total)]:
        if name == "total":
            out.write("-" * len(header) + "\n")
        out.write(
            f"{name:<18}{row['entries']:>9}{_size(row['stored_bytes']):>12}"
            f"{_size(row['raw_bytes']):>12}{row['compression_ratio']:>7.2f}x{row['expired']:>9}\n"
        )
    if codecs:
        out.write("\ncodecs: " + ", ".join(f"{c} {n}" for c, n in sorted(codecs.items())) + "\n")
    return EXIT_OK


def cmd_ls(args, out):
    """One line per entry, least recently used first."""
    cache = _open(args.dir)
    try:
        entries = list(cache.entries(args.level))
    finally:
        cache.close()
    if args.json:
        _emit_json([entry._asdict() | {"dependencies": list(entry.dependencies)} for entry in entries], out)
        return EXIT_OK
    if not entries:
        return EXIT_OK
    out.write(
        f"{'key':<32}  {'level':<16}{'stored':>11}{'raw':>11}  {'codec':<6}"
        f"{'cost':>8}  {'last access':<22}expires\n"
    )
    for e in entries:
        out.write(
            f"{e.key_hex:<32}  {e.level:<16}{_size(e.stored_size):>11}{_size(e.raw_size):>11}  "
            f"{e.codec:<6}{e.computation_cost:>8.3g}  {_when(e.last_access):<22}{_when(e.expires)}\n"
        )
    return EXIT_OK


def cmd_verify(args, out):
    """Re-check every frame's checksums; exit 1 if anything was found."""
    cache = _open(args.dir)
    try:
        count = sum(1 for _ in cache.entries())
        with _Progress(f"verifying {count} entries in {args.dir}"):
            problems = cache.verify(fix=args.fix)
    finally:
        cache.close()
    if args.json:
        _emit_json(
            {
                "entries": count,
                "problems": [{"path": p, "problem": what} for p, what in problems],
                "fixed": bool(args.fix and problems),
            },
            out,
        )
    else:
        for path, problem in problems:
            out.write(f"{path}: {problem}\n")
        action = "removed" if args.fix else "found (run with --fix to remove them)"
        if problems:
            out.write(f"{len(problems)} problem(s) in {count} entries, {action}\n")
        else:
            out.write(f"{count} entries verified, no problems\n")
    return EXIT_PROBLEMS if problems else EXIT_OK


def cmd_gc(args, out):
    """Remove expired entries, orphan and temporary files, then evict down to the budget."""
    cache = _open(args.dir)
    try:
        with _Progress(f"collecting garbage in {args.dir}"):
            report = cache.gc(max_disk_mb=args.max_disk_mb)
    finally:
        cache.close()
    if args.json:
        _emit_json(report, out)
        return EXIT_OK
    out.write(
        f"expired {report['expired']}, evicted {report['evicted']}, "
        f"orphan files {report['orphan_files']}, orphan rows {report['orphan_rows']}, "
        f"temporary files {report['temp_files']}; freed {_size(report['freed_bytes'])}\n"
        f"now {report['disk_files']} entries, {_size(report['disk_size_bytes'])}\n"
    )
    return EXIT_OK


def cmd_clear(args, out):
    """Remove every entry, or those of one level."""
    level = args.level
    cache = _open(args.dir)
    try:
        before = sum(1 for _ in cache.entries(level))
        with _Progress(f"removing {before} entries from {args.dir}"):
            cache.clear(level)
    finally:
        cache.close()
    out.write(f"removed {before} entries{'' if level is None else f' of level {level}'}\n")
    return EXIT_OK


def _megabytes(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of MiB, got {text!r}") from None
    if math.isnan(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number of MiB > 0, got {text!r}")
    return value


def _level_arg(text):
    try:
        return as_level(text).value
    except FastCacheError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser():
    """The argument parser; each subcommand sets ``func(args, out) -> exit code``.

    To add a subcommand, add a subparser and ``set_defaults(func=...)``.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect and maintain tnfr_fastcache disk cache directories.",
        epilog="exit codes: 0 success, 1 verify found problems, 2 error",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also log the library's warnings to stderr"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name, func, help_text):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("dir", metavar="DIR", help="the cache directory")
        sub.set_defaults(func=func)
        return sub

    sub = command("stats", cmd_stats, "entries, sizes and compression per level")
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub = command("ls", cmd_ls, "list entries, least recently used first")
    sub.add_argument("--level", type=_level_arg, help="only this level")
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub = command("verify", cmd_verify, "re-check every frame's checksums (exit 1 if any fail)")
    sub.add_argument("--fix", action="store_true", help="remove corrupt entries and stray files")
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub = command("gc", cmd_gc, "remove expired entries and orphans, then enforce the budget")
    sub.add_argument(
        "--max-disk-mb", type=_megabytes, default=None, metavar="N",
        help="evict down to N MiB (default: the directory's own limit)",
    )
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub = command("clear", cmd_clear, "remove every entry, or one level's")
    sub.add_argument("--level", type=_level_arg, help="only this level")
    from . import demo

    about = "compute a TNFR-like coherence matrix through memory, disk (and Redis) and show the timings"
    sub = commands.add_parser("demo", help=about, description=about)
    demo.add_arguments(sub)
    sub.set_defaults(func=demo.run)
    return parser


def main(argv=None):
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    library_log = logging.getLogger("tnfr_fastcache")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
    # without a handler, Python would print every warning (one per corrupt entry removed)
    handler.setLevel(logging.WARNING if args.verbose else logging.CRITICAL + 1)
    library_log.addHandler(handler)
    try:
        return args.func(args, sys.stdout)
    except BrokenPipeError:
        # the reader (``| head``) left: not an error; keep Python from complaining at exit
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass  # stdout is not a file descriptor (called in-process): nothing to silence
        return EXIT_OK
    except (CommandError, FastCacheError, OSError) as exc:
        message = str(exc) or type(exc).__name__
        sys.stderr.write(f"{PROG}: error: {message}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    finally:
        library_log.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
