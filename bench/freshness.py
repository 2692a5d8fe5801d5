#!/usr/bin/env python3
"""Freshness benchmark: how stale and how dead is what `/get-proxy` hands out while proxies
die at random between rounds, with rechecks on and off, side by side in one run.

A farm of working proxies kills a share of the living ones every minute (`--kill-per-minute`;
a killed proxy closes every connection at once, as a proxy that died). `serve` runs one round
at start (the next one is an hour away), then a client asks `/get-proxy?format=json` every
`--every` seconds for `--duration` seconds. Each answer is one proxy with `last_ok` (its last
successful check); the farm's `/farm/killed` page says when each killed proxy died. Per
handout: age = now - last_ok, dead = killed before it was handed out.

Runs alternate recheck on (`checker.recheck_interval_secs` = `--recheck`) and off (0),
`--reps` times each, every run on a fresh farm and service. Target (issue 14): with rechecks
on, the p99 age <= recheck interval + one check timeout.

Usage: python3 bench/freshness.py [--reps N] [--duration S] [--proxies N] [--recheck S]
       [--kill-per-minute F]
Prints Markdown, also written to bench-out/freshness.md.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

from common import BENCH_KEY, REL, build_release, free_port, serve_config, stop, wait, write_report
import common

TIMEOUT_MS = 2000


def http(method, url, key=True):
    return common.http(method, url, BENCH_KEY if key else None)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def one_run(a, recheck):
    tmp = tempfile.mkdtemp(prefix="pc-fresh-bench-")
    farm = subprocess.Popen([os.path.join(REL, "proxy-farm"), "--working", str(a.proxies), "--latency-ms", "20",
                             "--kill-per-minute", str(a.kill_per_minute), "--out", tmp, "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    info = json.loads(farm.stdout.readline())
    judge_base = info["judge_url"].rsplit("/", 1)[0]
    port = free_port()
    cfg = serve_config(info, port, tmp, checker={"concurrency_total": 5000, "timeout_ms": TIMEOUT_MS,
                                                 "connect_timeout_ms": 1000, "retries": 0,
                                                 "recheck_interval_secs": recheck})
    cfg_path = os.path.join(tmp, "config.json")
    json.dump(cfg, open(cfg_path, "w"))
    serve = subprocess.Popen([os.path.join(REL, "proxy-checker"), "serve", "--config", cfg_path],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    handed = []  # (t, host, last_ok)
    try:
        wait(lambda: http("GET", base + "/ready", key=False)[0] == 200 if serve.poll() is None else sys.exit("serve died"),
             "the first round")
        end = time.time() + a.duration
        while time.time() < end:
            status, body = http("GET", base + "/get-proxy?format=json")
            t = time.time()
            if status == 200:
                e = json.loads(body)[0]
                handed.append((t, e["host"], e["last_ok"]))
            time.sleep(a.every)
        killed = {}
        for line in http("GET", judge_base + "/farm/killed", key=False)[1].decode().splitlines():
            ip, at = line.split()
            killed[ip] = float(at)
        stat = json.loads(http("GET", base + "/stat")[1])
    finally:
        stop(serve, farm)
    ages = [t - ok for t, _, ok in handed]
    dead = sum(1 for t, host, _ in handed if host in killed and killed[host] < t)
    return {
        "handouts": len(handed),
        "p50": pct(ages, 0.5), "p99": pct(ages, 0.99), "max": max(ages) if ages else float("nan"),
        "dead": dead / max(1, len(handed)),
        "killed": len(killed),
        "pool_end": stat["pool"]["alive"],
        "rounds": stat["last_round"]["round_id"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=60)
    ap.add_argument("--proxies", type=int, default=2000)
    ap.add_argument("--recheck", type=int, default=15)
    ap.add_argument("--kill-per-minute", type=float, default=0.2)
    ap.add_argument("--every", type=float, default=0.02)
    a = ap.parse_args()
    build_release()
    rows = {"on": [], "off": []}
    for _ in range(a.reps):
        rows["on"].append(one_run(a, a.recheck))
        rows["off"].append(one_run(a, 0))
    med = lambda mode, k: statistics.median(r[k] for r in rows[mode])
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    target = a.recheck + TIMEOUT_MS / 1000
    out = ["## Freshness results", "",
           f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
           f"- machine: {os.cpu_count()} CPUs ({cpu}); service, farm and client share them",
           f"- {a.proxies} working proxies (20 ms), {a.kill_per_minute:.0%} of the living killed per minute at random; "
           f"one round at start, none after; check timeout {TIMEOUT_MS} ms; a client takes one proxy "
           f"(`/get-proxy?format=json`, round-robin) every {a.every * 1000:.0f} ms for {a.duration} s; "
           f"{a.reps} alternating runs per mode, each on a fresh farm and service", "",
           "| run | rechecks | handouts | age p50 s | age p99 s | age max s | dead handed out | killed | pool at end | rounds |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for i in range(a.reps):
        for mode, label in (("on", f"every {a.recheck} s"), ("off", "off")):
            r = rows[mode][i]
            out.append(f"| {i + 1} | {label} | {r['handouts']} | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | "
                       f"{r['dead']:.1%} | {r['killed']} | {r['pool_end']} | {r['rounds']} |")
    on_p99, off_dead, on_dead = med("on", "p99"), med("off", "dead"), med("on", "dead")
    out += ["", f"Medians: rechecks on — age p99 **{on_p99:.1f} s** (target ≤ {a.recheck} + {TIMEOUT_MS / 1000:.0f} = "
            f"{target:.0f} s: {'met' if on_p99 <= target else 'NOT met'}), dead handed out **{on_dead:.1%}**; "
            f"rechecks off — age p99 {med('off', 'p99'):.1f} s, dead handed out **{off_dead:.1%}** "
            f"({off_dead / on_dead if on_dead else float('inf'):.1f}× as many).", ""]
    write_report("freshness.md", "\n".join(out))


if __name__ == "__main__":
    main()
