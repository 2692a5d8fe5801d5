#!/usr/bin/env python3
"""Benchmarks of the check engine, run as separate processes against the proxy-farm binary.

Usage: python3 bench/run.py [--reps N] [--only NAME ...] [--baseline OLD_BINARY]

With --baseline, the throughput and in-flight scenarios also run OLD_BINARY (another
build of `proxy-checker`, e.g. from `git worktree add` of an older commit), alternating
with this one against the same farm, and report both medians and their ratio.

Builds release binaries, then for each scenario starts `proxy-farm`, runs
`proxy-checker check` (and the `raw-loop` baseline) under /usr/bin/time, and prints a
Markdown report (also written to bench-out/results.md). Quote its medians in
docs/BENCHMARKS.md together with the machine and date it prints.
"""
import argparse, json, os, platform, re, signal, statistics, subprocess, sys, tempfile, time

import wire

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")
FARM, CHECKER, RAW = (os.path.join(REL, b) for b in ("proxy-farm", "proxy-checker", "raw-loop"))


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


class Farm:
    def __init__(self, *flags):
        self.dir = tempfile.mkdtemp(prefix="pc-bench-")
        self.proc = subprocess.Popen([FARM, "--out", self.dir, "--threads", "1", *flags],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.info = json.loads(self.proc.stdout.readline())

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def timed(cmd):
    """Runs cmd under /usr/bin/time; returns (wall seconds, peak RSS KiB, CPU seconds (user +
    system), stdout, stderr)."""
    t = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M %U %S", *cmd], text=True, capture_output=True)
    if t.returncode != 0:
        sys.exit(f"command failed ({t.returncode}): {' '.join(cmd)}\n{t.stderr[-2000:]}")
    m = re.search(r"TIME ([\d.]+) (\d+) ([\d.]+) ([\d.]+)", t.stderr)
    return float(m.group(1)), int(m.group(2)), float(m.group(3)) + float(m.group(4)), t.stdout, t.stderr


BASELINE = None


def listen_overflows():
    """The kernel's count of SYNs dropped because a listen queue was full (the farm's: one
    listener stands in for every proxy, and `somaxconn` caps its queue)."""
    names = None
    with open("/proc/net/netstat") as f:
        for line in f:
            if line.startswith("TcpExt:") and names is None:
                names = line.split()
            elif line.startswith("TcpExt:"):
                return int(line.split()[names.index("ListenOverflows")])
    return 0


def check(farm, *extra, binary=None, source=None):
    cmd = [binary or CHECKER, "check", "--allow-private", "--judge-url", farm.info["judge_url"],
           "--source", source or farm.info["list_file"], *([] if "-o" in extra else ["-o", "/dev/null"]), *extra]
    before = listen_overflows()
    wall, rss, cpu, _, err = timed(cmd)
    overflows = listen_overflows() - before
    m = re.search(r"checked (\d+) in ([\d.]+)s \((\d+)/s\): (\d+) alive, (\d+) dead; (\d+) retries, (\d+) local"
                  r" requeues, (\d+) probes", err)
    if not m:
        sys.exit(f"no summary in:\n{err}")
    n, secs, rate, alive, dead, retries, local, probes = m.groups()
    return {"wall": wall, "rss_mib": rss / 1024, "checked": int(n), "run_s": float(secs), "rate": int(rate),
            "alive": int(alive), "dead": int(dead), "retries": int(retries), "local": int(local),
            "probes": int(probes), "overflows": overflows,
            "cpu_s": cpu, "cpu_us": cpu * 1e6 / max(1, int(n))}


def raw(farm, concurrency, tunnel, keep_alive=False):
    judge = farm.info["judge_url"].removeprefix("http://").removesuffix("/get")
    cmd = [RAW, "--list", farm.info["list_file"], "--judge", judge, "--concurrency", str(concurrency)]
    if tunnel:
        cmd.append("--tunnel")
    if keep_alive:
        cmd.append("--keep-alive")
    _, rss, cpu, out, _ = timed(cmd)
    r = json.loads(out)
    r["rss_mib"] = rss / 1024
    r["cpu_s"] = cpu
    r["cpu_us"] = cpu * 1e6 / max(1, r["proxies"])
    return r


def med(rows, key):
    return statistics.median(r[key] for r in rows)


class SpecFarm(Farm):
    """A farm built from a JSON FarmSpec (groups of protocol × behaviour × latency)."""

    def __init__(self, groups):
        spec = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump({"groups": groups}, spec)
        spec.close()
        super().__init__("--spec", spec.name)


def realistic(reps, out):
    connect_s, timeout_s, backoff_s = 3.0, 5.0, 0.25
    # The strangers' mix: refused and SYN-dropped hosts, and proxies that accept and then
    # stay silent, answer a byte at a time, or answer only after the timeout.
    mix = [(6000, "working", 100), (4000, "refused", 0), (4000, "blackhole", 0),
           (2000, "silent", 0), (2000, "trickle", 0), (2000, "too_slow", 0)]
    groups = [{"count": n, "protocol": "http", "behavior": b, "latency_ms": l} for n, b, l in mix]
    out.append("### Realistic round: 20,000 HTTP proxies, 70% dead, 30% of them slow\n")
    out.append("6,000 working (100 ms), 4,000 refused, 4,000 SYN-dropped, 2,000 silent after accept, "
               "2,000 trickling one byte per 200 ms, 2,000 answering after an hour; connect timeout 3 s, "
               "timeout 5 s, backoff 0.25 s, concurrency 25,000 requested (clamped by the fd budget).\n")
    out.append("The bound is what a checker that pays a slow proxy's timeout once per attempt must take: "
               "timeout × attempts + the backoff before each retry (at most 1.5 × its base, with jitter).\n")
    out.append("| retries | run | round (s) | wall (s) | peak RSS (MiB) | CPU s (µs/check) | alive | dead | retries made | local requeues |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    summary = []
    with SpecFarm(groups) as farm:
        for retries in (0, 1):
            rows = [check(farm, "--connect-timeout-ms", str(int(connect_s * 1000)), "--timeout-ms",
                          str(int(timeout_s * 1000)), "--retries", str(retries), "--concurrency", "25000")
                    for _ in range(reps)]
            for i, r in enumerate(rows):
                out.append(f"| {retries} | {i+1} | {r['run_s']:.2f} | {r['wall']:.2f} | {r['rss_mib']:.1f} | "
                           f"{r['cpu_s']:.2f} ({r['cpu_us']:.0f}) | {r['alive']} | {r['dead']} | {r['retries']} | {r['local']} |")
            bound = timeout_s * (retries + 1) + sum(backoff_s * 2**k * 1.5 for k in range(retries))
            m = med(rows, "run_s")
            summary.append(f"- {retries} retries: median round {m:.2f} s, bound {bound:.3f} s, ratio "
                           f"**{m / bound:.2f}** (target ≤ 1.1); median peak RSS {med(rows, 'rss_mib'):.1f} MiB; "
                           f"{rows[0]['alive']} alive (6,000 expected)")
    out.append("")
    out.extend(summary)
    out.append("")


def side_by_side(out, what, rows, base, key, unit, higher_is_better):
    """Appends the baseline comparison of one scenario (when --baseline was given)."""
    if not base:
        return
    n, b = med(rows, key), med(base, key)
    out.append(f"Side by side with the baseline `{BASELINE}`, alternating against the same farm: {what} "
               f"this build {n:.1f} {unit} (runs: {', '.join(f'{r[key]:.1f}' for r in rows)}), baseline "
               f"{b:.1f} {unit} (runs: {', '.join(f'{r[key]:.1f}' for r in base)}); this ÷ baseline "
               f"**{f'{n / b:.3f}' if b else ('equal' if n == b else '—')}** "
               f"({'higher' if higher_is_better else 'lower'} is better).\n")


def throughput(reps, out):
    with Farm("--working", "100000") as farm:
        eng, rawk, rawt, rawf, base = [], [], [], [], []
        for _ in range(reps):
            eng.append(check(farm, "--concurrency", "1000"))
            if BASELINE:
                base.append(check(farm, "--concurrency", "1000", binary=BASELINE))
            rawk.append(raw(farm, 1000, True, keep_alive=True))
            rawt.append(raw(farm, 1000, True))
            rawf.append(raw(farm, 1000, False))
    e = med(eng, "rate")
    k = med(rawk, "per_sec")
    t = med(rawt, "per_sec")
    f = med(rawf, "per_sec")
    out.append("### Throughput: 100,000 working HTTP proxies, no injected latency, full-http, concurrency 1,000\n")
    out.append("A full check of an HTTP proxy makes three exchanges: an absolute-URI GET, then a CONNECT and a GET "
               "inside the tunnel, on the GET's connection when the proxy keeps it alive (the farm's working proxies "
               "do). `raw-loop --tunnel --keep-alive` makes the same three on one connection with nothing else; "
               "`raw-loop --tunnel` makes them on two connections (what a check cost before keep-alive); `raw-loop` "
               "makes only the GET: one exchange per proxy, the issue's floor.\n")
    out.append("CPU is user + system time of the process, and per proxy checked.\n")
    out.append("| run | engine proxies/s | CPU s (µs/proxy) | connections/proxy | raw, same exchanges on one connection, "
               "proxies/s | CPU s (µs/proxy) | raw, two connections, proxies/s | CPU s (µs/proxy) "
               "| raw, GET only, proxies/s | CPU s (µs/proxy) |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for i in range(reps):
        out.append(f"| {i+1} | {eng[i]['rate']} | {eng[i]['cpu_s']:.2f} ({eng[i]['cpu_us']:.1f}) | "
                   f"{eng[i]['probes'] / max(1, eng[i]['checked']):.2f} | "
                   f"{rawk[i]['per_sec']:.0f} | {rawk[i]['cpu_s']:.2f} ({rawk[i]['cpu_us']:.1f}) | "
                   f"{rawt[i]['per_sec']:.0f} | {rawt[i]['cpu_s']:.2f} ({rawt[i]['cpu_us']:.1f}) | "
                   f"{rawf[i]['per_sec']:.0f} | {rawf[i]['cpu_s']:.2f} ({rawf[i]['cpu_us']:.1f}) |")
    out.append(f"\nMedians: engine {e:.0f} proxies/s. Engine ÷ raw GET only (one exchange per proxy): **{e / f:.2f}** "
               f"(issue 15 target ≥ 0.9); engine ÷ raw same exchanges on one connection: **{e / k:.2f}**; engine ÷ raw "
               f"on two connections: {e / t:.2f}. All {eng[0]['alive']} found alive. CPU per proxy: engine "
               f"{med(eng, 'cpu_us'):.1f} µs, raw same exchanges on one connection {med(rawk, 'cpu_us'):.1f} µs "
               f"(**{med(eng, 'cpu_us') / med(rawk, 'cpu_us'):.2f}×**), raw on two connections {med(rawt, 'cpu_us'):.1f} µs, "
               f"raw GET only {med(rawf, 'cpu_us'):.1f} µs.\n")
    side_by_side(out, "engine proxies/s", eng, base, "rate", "proxies/s", True)
    side_by_side(out, "CPU per proxy", eng, base, "cpu_us", "µs", False)


def inflight(reps, out):
    with Farm("--working", "19000", "--latency-ms", "2000") as farm:
        rows, base = [], []
        for _ in range(reps):
            rows.append(check(farm, "--concurrency", "19000"))
            if BASELINE:
                base.append(check(farm, "--concurrency", "19000", binary=BASELINE))
    out.append("### In flight: 19,000 checks at once (farm holds every answer 2 s)\n")
    out.append("| run | peak RSS (MiB) | run (s) | CPU s (µs/check) | alive |")
    out.append("|---|---|---|---|---|")
    for i, r in enumerate(rows):
        out.append(f"| {i+1} | {r['rss_mib']:.1f} | {r['run_s']:.2f} | {r['cpu_s']:.2f} ({r['cpu_us']:.0f}) | {r['alive']} |")
    out.append(f"\nMedian peak RSS **{med(rows, 'rss_mib'):.1f} MiB** (issue 15 target ≤ 60), "
               f"≈ {med(rows, 'rss_mib') * 1024 / 19000:.1f} KiB per check in flight, process baseline included.\n")
    side_by_side(out, "peak RSS", rows, base, "rss_mib", "MiB", False)
    side_by_side(out, "CPU per check", rows, base, "cpu_us", "µs", False)


def latency(reps, out):
    """Reported latency against the latency the farm injects, with 19,000 checks in flight."""
    per, steps = 950, 20
    injected = [200 + 100 * k for k in range(steps)]
    groups = [{"count": per, "protocol": "http", "behavior": "working", "latency_ms": l} for l in injected]
    csv = os.path.join(tempfile.mkdtemp(prefix="pc-latency-"), "out.csv")

    def errors(binary):
        before = listen_overflows()
        pcap = os.path.join(os.path.dirname(csv), "wire.pcap")
        cap = wire.Capture(port, pcap)
        check(farm, "--concurrency", "19000", "--format", "csv", "-o", csv, binary=binary)
        lost = cap.stop()
        dropped = listen_overflows() - before
        truth, _ = wire.proxy_costs(pcap, port)
        os.unlink(pcap)
        vs_wire = []
        errs, clean = [], []
        with open(csv) as f:
            next(f)
            for line in f:
                cols = line.split(",")
                a, b, c, d = (int(x) for x in cols[2].split("."))
                i = ((a << 24) | (b << 16) | (c << 8) | d) - ((127 << 24) | (1 << 16))
                e = int(cols[4]) - injected[i // per]
                errs.append(e)
                if cols[2] in truth:
                    vs_wire.append(int(cols[4]) - truth[cols[2]])
                # A connect that took a second had its SYN dropped by the farm's full
                # listen queue and sent again: a real cost, but the farm's, not ours.
                if int(cols[5]) < 1000:
                    clean.append(e)
        errs.sort()
        clean.sort()
        vs_wire.sort()
        q = lambda v, p: v[min(len(v) - 1, int(p * len(v)))] if v else float("nan")
        return {"n": len(errs), "p50": q(errs, 0.5), "p90": q(errs, 0.9), "p99": q(errs, 0.99), "min": errs[0],
                "clean": len(clean), "c50": q(clean, 0.5), "c90": q(clean, 0.9), "c99": q(clean, 0.99),
                "dropped": dropped, "wired": len(vs_wire), "w50": q(vs_wire, 0.5), "w90": q(vs_wire, 0.9),
                "w99": q(vs_wire, 0.99), "wmin": q(vs_wire, 0.0), "lost": lost}

    with SpecFarm(groups) as farm:
        with open(farm.info["list_file"]) as f:
            port = int(f.readline().strip().rsplit(":", 1)[1])
        rows, base = [], []
        for _ in range(reps):
            rows.append(errors(None))
            if BASELINE:
                base.append(errors(BASELINE))
    out.append("### Latency under load: 19,000 checks in flight, latency injected by the farm\n")
    out.append(f"19,000 working HTTP proxies in {steps} groups of {per}, the farm holding each answer "
               f"{injected[0]}–{injected[-1]} ms (by group, 100 ms apart), concurrency 19,000: every check in flight "
               "at once. Error = the latency `check` reports (CSV, ms) − the latency the farm injected for that "
               "proxy. What is left in the error besides the checker: loopback RTTs and the farm's own lateness "
               "(one thread answering 19,000 connections).\n")
    out.append("Proxies whose connect took ≥ 1 s had a SYN dropped by the farm's full listen queue (`somaxconn` "
               "caps one listener standing in for 19,000 proxies; the kernel's ListenOverflows count is given) and "
               "sent again after 1 s: the checker reports that second truthfully, and the error is also given "
               "without them.\n")
    out.append("The wire is the other truth: tcpdump on loopback during each run (`bench/wire.py`), and per proxy the "
               "least cost of its checks as the packets show it (SYN to SYN-ACK, plus each request's first packet to "
               "its answer's first packet): what the proxy cost, whatever either process's queueing. Error vs wire = "
               "reported − that.\n")
    out.append("| run | build | proxies | vs injected: p50 ms | p90 | p99 | min | SYNs dropped (farm) | without a dropped SYN: proxies | p50 | p90 | p99 | vs wire: proxies | p50 | p90 | p99 | min | packets lost by the capture |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for i in range(reps):
        for name, r in (("this", rows[i]), ("baseline", base[i] if base else None)):
            if r:
                out.append(f"| {i+1} | {name} | {r['n']} | {r['p50']} | {r['p90']} | {r['p99']} | {r['min']} | "
                           f"{r['dropped']} | {r['clean']} | {r['c50']} | {r['c90']} | {r['c99']} | "
                           f"{r['wired']} | {r['w50']:.1f} | {r['w90']:.1f} | {r['w99']:.1f} | {r['wmin']:.1f} | {r['lost']} |")
    line = (f"\nMedians, this build: error p90 **{med(rows, 'c90'):.0f} ms** without a dropped SYN "
            f"(p50 {med(rows, 'c50'):.0f}, p99 {med(rows, 'c99'):.0f}; issue 15 target ≤ 10 ms), "
            f"{med(rows, 'p90'):.0f} ms over all (p50 {med(rows, 'p50'):.0f}, p99 {med(rows, 'p99'):.0f})")
    line += (f". Against the wire: p90 **{med(rows, 'w90'):.1f} ms** (p50 {med(rows, 'w50'):.1f}, "
             f"p99 {med(rows, 'w99'):.1f})")
    if base:
        line += (f"; baseline: p90 {med(base, 'c90'):.0f} ms without a dropped SYN (p50 {med(base, 'c50'):.0f}, "
                 f"p99 {med(base, 'c99'):.0f}), {med(base, 'p90'):.0f} ms over all; against the wire p90 "
                 f"{med(base, 'w90'):.1f} ms (p50 {med(base, 'w50'):.1f}, p99 {med(base, 'w99'):.1f})")
    out.append(line + ".\n")


def scale(reps, out):
    args = ("--concurrency", "25000", "--max-proxies-per-source", "2000000")
    with Farm("--working", "100000", "--refused", "900000") as farm:
        rows, base = [], []
        for _ in range(reps):
            rows.append(check(farm, *args))
            if BASELINE:
                base.append(check(farm, *args, binary=BASELINE))
    out.append("### Scale: 1,000,000 candidates in one run (100,000 working, 900,000 refused)\n")
    out.append("| run | peak RSS (MiB) | run (s) | checks/s | CPU s (µs/check) | alive | retries |")
    out.append("|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows):
        out.append(f"| {i+1} | {r['rss_mib']:.1f} | {r['run_s']:.1f} | {r['rate']} | {r['cpu_s']:.2f} ({r['cpu_us']:.1f}) | {r['alive']} | {r['retries']} |")
    out.append(f"\nMedian peak RSS **{med(rows, 'rss_mib'):.1f} MiB** (issue 15 target ≤ 150).\n")
    side_by_side(out, "peak RSS", rows, base, "rss_mib", "MiB", False)
    side_by_side(out, "alive (of 100,000 working)", rows, base, "alive", "proxies", True)
    side_by_side(out, "SYNs the farm's listen queue dropped (kernel ListenOverflows)", rows, base, "overflows", "", False)


def mislabelled(reps, out):
    """What protocol detection costs: the same proxies listed right, and all listed wrong."""
    groups = [{"count": 5000, "protocol": p, "behavior": "working", "latency_ms": 0} for p in ("http", "socks5")]
    with SpecFarm(groups) as farm:
        right = farm.info["list_file"]
        wrong = os.path.join(farm.dir, "mislabelled.txt")
        swap = {"http://": "socks5://", "socks5://": "http://"}
        with open(right) as f, open(wrong, "w") as g:
            for line in f:
                for a, b in swap.items():
                    if line.startswith(a):
                        line = b + line[len(a):]
                        break
                g.write(line)
        rows_right, rows_wrong = [], []
        for _ in range(reps):
            rows_right.append(check(farm, "--concurrency", "1000", source=right))
            rows_wrong.append(check(farm, "--concurrency", "1000", source=wrong))
    out.append("### Mislabelled: 5,000 HTTP and 5,000 SOCKS5 working proxies, listed right, then each under the other protocol\n")
    out.append("Detection is on (the default): a proxy that answers in the other protocol's bytes is checked as "
               "that one within its attempt, for one extra connection.\n")
    out.append("| run | listed right: round (s), CPU s, alive | all listed wrong: round (s), CPU s, alive |")
    out.append("|---|---|---|")
    for i in range(reps):
        out.append(f"| {i+1} | {rows_right[i]['run_s']:.2f}, {rows_right[i]['cpu_s']:.2f}, {rows_right[i]['alive']} | "
                   f"{rows_wrong[i]['run_s']:.2f}, {rows_wrong[i]['cpu_s']:.2f}, {rows_wrong[i]['alive']} |")
    r, w = med(rows_right, "run_s"), med(rows_wrong, "run_s")
    out.append(f"\nMedians: right {r:.2f} s, wrong {w:.2f} s, ratio **{w / r:.2f}**; all "
               f"{rows_wrong[0]['alive']} found alive under the protocol they speak.\n")


SCENARIOS = {"realistic": realistic, "throughput": throughput, "inflight": inflight, "latency": latency, "scale": scale,
             "mislabelled": mislabelled}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", nargs="*", choices=list(SCENARIOS))
    ap.add_argument("--baseline", help="another proxy-checker binary to run side by side (throughput, inflight)")
    a = ap.parse_args()
    global BASELINE
    BASELINE = a.baseline
    sh(["cargo", "build", "--release", "--workspace"], cwd=ROOT)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    nofile = sh(["sh", "-c", "ulimit -Hn"]).stdout.strip()
    out = ["## Results", "",
           f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
           f"- machine: {os.cpu_count()} CPUs ({cpu}), {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
           f"{platform.system()} {platform.release()}, hard RLIMIT_NOFILE {nofile}",
           f"- rustc: {sh(['rustc', '--version']).stdout.strip()}",
           f"- repetitions per scenario: {a.reps} (medians quoted)", ""]
    for name in a.only or SCENARIOS:
        print(f"running {name} ...", file=sys.stderr)
        SCENARIOS[name](a.reps, out)
    text = "\n".join(out) + "\n"
    os.makedirs(os.path.join(ROOT, "bench-out"), exist_ok=True)
    with open(os.path.join(ROOT, "bench-out", "results.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
