#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Turn the `DMLU-BENCH {json}` lines of a `make bench` guest run into
bench.md (tables with ratios), bench.json (the medians and every run) and
bench.png (a chart, if gnuplot is installed).

Usage: scripts/bench-report.py <ktap.log> <out dir>
"""

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

SYSTEMS = {
    "rust": "mirror, userspace log, our module",
    "c": "mirror, userspace log, in-tree C module",
    "core": "mirror, kernel `core` log",
    "disk": "mirror, kernel `disk` log",
    "linear": "dm-linear on one leg (ceiling)",
}
SHORT = {"rust": "ours", "c": "C module", "core": "core log",
         "disk": "disk log", "linear": "linear"}
TESTS = {
    "seq-1m": "1 MiB sequential writes, iodepth 1",
    "resync": "resync of a `sync` mirror to 100%",
}
# The requests a flush sends (the others are IN_SYNC, resync, status...).
FLUSH_TYPES = ("CLEAR_REGION", "MARK_REGION", "FLUSH")


def test_title(test):
    if test in TESTS:
        return TESTS[test]
    # rand-qd<depth>-j<jobs>
    qd, jobs = test.removeprefix("rand-qd").split("-j")
    return f"4 KiB random writes, iodepth {qd}, {jobs} job{'s' if jobs != '1' else ''}"


def parse(log):
    config, records, done = {}, [], False
    for line in log.read_text(errors="replace").splitlines():
        line = line.strip("\r\n ")
        if not line.startswith("DMLU-BENCH "):
            continue
        rec = json.loads(line.split(" ", 1)[1])
        if "config" in rec:
            config = rec["config"]
        elif rec.get("done"):
            done = True
        else:
            records.append(rec)
    return config, records, done


def op_count(ulogd, kind):
    return ulogd["by_type"].get(kind, {}).get("count", 0)


def per_run(rec):
    """The figures of one run."""
    u, m = rec.get("ulogd"), rec.get("module")
    out = {}
    if rec["test"] == "resync":
        out["seconds"] = rec["seconds"]
        if u:
            out["requests_per_region"] = u["requests"] / rec["regions"]
    else:
        f = rec["fio"]
        pct = f["clat_ns"].get("percentile", {})
        out["iops"] = f["iops"]
        out["mib_s"] = f["bw"] / 1024
        out["p50_ms"] = pct.get("50.000000", 0) / 1e6
        out["p99_ms"] = pct.get("99.000000", 0) / 1e6
        if u and rec["writes"]:
            out["requests_per_1000_writes"] = 1000 * u["requests"] / rec["writes"]
    if u:
        out["requests"] = {k: v["count"] for k, v in u["by_type"].items() if v["count"]}
    # Round trips per flush. Ours counts them itself (the DTR line). The C
    # module sends each request after the previous reply, and each of its
    # flushes (without integrated_flush) ends with exactly one FLUSH: its
    # round trips are its flush requests, its flushes the FLUSH requests.
    if m and m["flushes"]:
        out["flushes"] = m["flushes"]
        out["round_trips_per_flush"] = m["flush_round_trips"] / m["flushes"]
    elif rec["system"] == "c" and u and op_count(u, "FLUSH"):
        out["flushes"] = op_count(u, "FLUSH")
        out["round_trips_per_flush"] = sum(op_count(u, k) for k in FLUSH_TYPES) / out["flushes"]
    return out


def summarise(records):
    """Medians per (test, system), in the order first seen."""
    groups = {}
    for rec in records:
        groups.setdefault((rec["test"], rec["system"]), []).append(per_run(rec))
    summary = []
    for (test, system), runs in groups.items():
        row = {"test": test, "system": system, "runs": len(runs)}
        for key in ("iops", "mib_s", "p50_ms", "p99_ms", "requests_per_1000_writes",
                    "round_trips_per_flush", "seconds", "requests_per_region"):
            vals = [r[key] for r in runs if key in r]
            if vals:
                row[key] = statistics.median(vals)
        # The least disturbed run: host load only ever slows a run down.
        if any("iops" in r for r in runs):
            row["best_iops"] = max(r["iops"] for r in runs if "iops" in r)
        if any("seconds" in r for r in runs):
            row["best_seconds"] = min(r["seconds"] for r in runs if "seconds" in r)
        summary.append(row)
    # Ratios against the C module and the core log, on medians.
    by_key = {(r["test"], r["system"]): r for r in summary}
    for r in summary:
        metric = "seconds" if r["test"] == "resync" else "iops"
        for prefix in ("", "best_"):
            for ref in ("c", "core"):
                base = by_key.get((r["test"], ref), {}).get(prefix + metric)
                mine = r.get(prefix + metric)
                if base and mine:
                    # Higher is better for both: speed for the resync.
                    r[f"{prefix}vs_{ref}"] = base / mine if metric == "seconds" else mine / base
    order = {s: i for i, s in enumerate(SYSTEMS)}
    tests = list(dict.fromkeys(r["test"] for r in summary))
    summary.sort(key=lambda r: (tests.index(r["test"]), order.get(r["system"], 99)))
    return summary


def starved_runs(records):
    """Runs during which the guest's CPU probe took more than twice its
    median over the boot: the host was busy with something else."""
    probes = [p for r in records for p in r.get("probe_ms", [])]
    if not probes:
        return []
    limit = 2 * statistics.median(probes)
    return [{"test": r["test"], "system": r["system"], "run": r["run"], "probe_ms": r["probe_ms"]}
            for r in records if max(r.get("probe_ms", [0])) > limit]


def fmt(v, digits=2, na="n/a"):
    if v is None:
        return na
    if isinstance(v, float) and v >= 100:
        return f"{v:.0f}"
    return f"{v:.{digits}f}"


def markdown(config, summary, starved, n_runs):
    out = []
    c = config
    out.append(
        f"Kernel {c.get('kernel', '?')} (perf flavour) under QEMU TCG, {c.get('cpus', '?')} vCPUs, "
        f"{c.get('mem_mib', '?')} MiB; {c.get('fio', 'fio')}, libaio, direct I/O; legs are "
        f"{c.get('leg_mib', '?')} MiB loop devices on the guest's tmpfs; region size "
        f"{c.get('region_sectors', '?')} sectors; mirrors created `nosync`; "
        f"{c.get('ramp_s', '?')} s ramp + {c.get('runtime_s', '?')} s per run; medians of "
        f"{c.get('runs', '?')} runs, systems rotated. Both userspace logs are served by dm-ulogd "
        "(`clustered-core`). TCG makes absolute figures meaningless: compare the ratios.")
    out.append("")
    out.append("| test | system | IOPS | MiB/s | / C module | / core log | p50 ms | p99 ms "
               "| log requests / 1000 writes | round trips / flush |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in summary:
        if r["test"] == "resync":
            continue
        userspace = r["system"] in ("rust", "c")
        out.append("| " + " | ".join([
            test_title(r["test"]), SHORT.get(r["system"], r["system"]),
            fmt(r.get("iops"), 0), fmt(r.get("mib_s"), 1),
            fmt(r.get("vs_c")), fmt(r.get("vs_core")),
            fmt(r.get("p50_ms")), fmt(r.get("p99_ms")),
            fmt(r.get("requests_per_1000_writes"), 0) if userspace else "n/a¹",
            fmt(r.get("round_trips_per_flush")) if userspace else "n/a¹",
        ]) + " |")
    resync = [r for r in summary if r["test"] == "resync"]
    if resync:
        out.append("")
        out.append(f"Resync of a {config.get('resync_mib', '?')} MiB mirror created `sync` "
                   "(time from `dmsetup create` to 100% in sync, polled every 0.1 s):")
        out.append("")
        out.append("| system | seconds | speed / C module | speed / core log | log requests / region |")
        out.append("|---|---:|---:|---:|---:|")
        for r in resync:
            userspace = r["system"] in ("rust", "c")
            out.append("| " + " | ".join([
                SHORT.get(r["system"], r["system"]), fmt(r.get("seconds")),
                fmt(r.get("vs_c")), fmt(r.get("vs_core")),
                fmt(r.get("requests_per_region")) if userspace else "n/a¹",
            ]) + " |")
    ours = {r["test"]: r for r in summary if r["system"] == "rust"}
    theirs = {r["test"]: r for r in summary if r["system"] == "c"}
    both = [t for t in ours if t in theirs]
    if both:
        out.append("")
        out.append("Our module / the C module (throughput: higher is better; latency, "
                   "requests and round trips: lower is better):")
        out.append("")
        out.append("| test | throughput (medians) | throughput (best runs) | p50 | p99 "
                   "| requests / write | round trips / flush |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for t in both:
            o, c_ = ours[t], theirs[t]

            def ratio(key):
                a, b = o.get(key), c_.get(key)
                return fmt(a / b) if a is not None and b else "n/a"
            speed = f"{fmt(o.get('vs_c'))} | {fmt(o.get('best_vs_c'))}"
            if t == "resync":
                out.append(f"| {test_title(t)} | {speed} | | | {ratio('requests_per_region')} | |")
            else:
                out.append(f"| {test_title(t)} | {speed} | {ratio('p50_ms')} | {ratio('p99_ms')} "
                           f"| {ratio('requests_per_1000_writes')} | {ratio('round_trips_per_flush')} |")
    out.append("")
    out.append("¹ Only the userspace logs send requests to a server: dm-ulogd's counters "
               "(`dm-ulogd stats --json`, reset before each run) over the run, divided by the "
               "writes the mirror completed in the same window (ramp included). Round trips "
               "per flush: our module counts the flushes that sent requests and the round "
               "trips they waited for, and prints them when the log is destroyed; the C module "
               "waits for each reply before the next request and ends each flush with one "
               "FLUSH (no `integrated_flush`), so its figure is "
               "(CLEAR_REGION + MARK_REGION + FLUSH requests) / FLUSH requests.")
    out.append("")
    out.append("Best runs: the highest IOPS (shortest resync) of each system's runs. "
               "Load elsewhere on the host only ever slows a run down, and under TCG it can "
               "do so tenfold (a descheduled vCPU delays every wake-up, and a log round trip "
               "is two of them); when the medians of two systems disagree with their best "
               "runs, compare the per-run figures in bench.json.")
    out.append("")
    if starved:
        out.append(f"{len(starved)} of {n_runs} runs had the guest's CPU probe (a fixed `dd` "
                   "before and after the run) above twice its median (list in bench.json, "
                   "`starved_runs`); the probe sees lost CPU time, not wake-up delays.")
        out.append("")
    return "\n".join(out)


def chart(summary, out_dir):
    """bench.png: each system's throughput relative to the core log."""
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        print("bench-report: gnuplot not found, no chart (apt-get install gnuplot-nox)",
              file=sys.stderr)
        return None
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in summary)]
    if "core" not in systems:
        print("bench-report: the core log was not run (DMLU_BENCH_SYSTEMS), no chart",
              file=sys.stderr)
        return None
    tests = list(dict.fromkeys(r["test"] for r in summary))
    by_key = {(r["test"], r["system"]): r for r in summary}
    rows = []
    for t in tests:
        label = {"seq-1m": "seq 1 MiB", "resync": "resync"}.get(t, t.replace("rand-", "4k "))
        vals = [by_key.get((t, s), {}).get("vs_core") for s in systems]
        rows.append(f'"{label}" ' + " ".join("NaN" if v is None else f"{v:.4f}" for v in vals))
    data = out_dir / "bench.dat"
    data.write_text("\n".join(rows) + "\n")
    colors = {"rust": "#d95f02", "c": "#7570b3", "core": "#1b9e77",
              "disk": "#66a61e", "linear": "#999999"}
    plots = ", ".join(
        f"'{data}' using {i + 2}:xtic(1) title '{SHORT[s]}' lc rgb '{colors[s]}'"
        for i, s in enumerate(systems))
    png = out_dir / "bench.png"
    script = f"""
set terminal pngcairo size 860,420 font 'sans,10'
set output '{png}'
set title 'dm-log-userspace: throughput relative to the kernel core log (medians, QEMU TCG, one boot)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.9 border -1
set boxwidth 0.9
set logscale y
set yrange [0.01:*]
set grid ytics
set ylabel 'relative to core log (log scale)'
set key outside bottom center horizontal
plot {plots}
"""
    subprocess.run([gnuplot], input=script, text=True, check=True)
    return png


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    log, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    config, records, done = parse(log)
    if not records:
        sys.exit(f"bench-report: no DMLU-BENCH results in {log}")
    if not done:
        print("bench-report: the run did not finish; reporting what it measured",
              file=sys.stderr)
    summary = summarise(records)
    starved = starved_runs(records)
    md = markdown(config, summary, starved, len(records))
    (out_dir / "bench.md").write_text(md)
    (out_dir / "bench.json").write_text(json.dumps(
        {"config": config, "complete": done, "summary": summary,
         "starved_runs": starved, "runs": records},
        indent=1) + "\n")
    chart(summary, out_dir)
    print(md)


if __name__ == "__main__":
    main()
