#!/usr/bin/env python3
"""Soak: the realistic 20k round (6,000 working, 7,000 refused, 7,000 SYN-dropped) repeated by
`proxy-checker serve` (interval 5 s) for --minutes while wrk keeps a steady load on
/get-proxy. Between rounds it records RSS, open fds, threads and live tokio tasks of `serve`;
at the end it prints the series, the growth from the first rounds to the last ones, and
wrk's totals (every non-2xx answer and socket error counts as a failure).

Usage: python3 bench/soak.py [--minutes 30] [--rate-conns 8] [--delay-ms 10]
Needs wrk (Debian: apt-get install wrk). Markdown goes to stdout and bench-out/soak.md.
"""
import argparse, json, os, re, signal, statistics, subprocess, sys, tempfile, time

from common import REL, build_release, free_port, http, proc_status, wrk_summary, write_report

KEY = "soak-key-0123456789abcdef"


def get(url):
    return http("GET", url, KEY)


def proc_sample(pid):
    return proc_status(pid, "VmRSS"), len(os.listdir(f"/proc/{pid}/fd")), proc_status(pid, "Threads")


def tasks(base):
    _, body = get(base + "/metrics")
    out = {}
    for m in re.finditer(r'^proxychecker_runtime_alive_tasks\{runtime="(\w+)"\} (\d+)', body.decode(), re.M):
        out[m.group(1)] = int(m.group(2))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate-conns", type=int, default=8)
    ap.add_argument("--delay-ms", type=int, default=10)
    a = ap.parse_args()
    build_release()
    tmp = tempfile.mkdtemp(prefix="pc-soak-")
    farm = subprocess.Popen([os.path.join(REL, "proxy-farm"), "--working", "6000", "--refused", "7000",
                             "--blackhole", "7000", "--latency-ms", "100", "--out", tmp, "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    info = json.loads(farm.stdout.readline())
    port = free_port()
    cfg = {
        "sources": [info["list_url"]],
        "aggregation": {"interval_secs": 5, "allow_private_sources": True},
        "checker": {"judge_url": info["judge_url"], "allow_private": True, "concurrency_total": 25000,
                    "connect_timeout_ms": 3000, "timeout_ms": 5000, "retries": 1},
        "api": {"listen": f"127.0.0.1:{port}", "api_keys": [KEY], "rate_limit_per_minute": 10000000,
                "rate_limit_per_ip_per_minute": 10000000},
        "storage": {"type": "file", "path": os.path.join(tmp, "snap.json")},
        "log": {"level": "warn", "format": "json"},
    }
    cfg_path = os.path.join(tmp, "config.json")
    json.dump(cfg, open(cfg_path, "w"))
    log = open(os.path.join(tmp, "serve.log"), "w")
    serve = subprocess.Popen([os.path.join(REL, "proxy-checker"), "serve", "--config", cfg_path],
                             stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    lua = os.path.join(tmp, "delay.lua")
    open(lua, "w").write(f"function delay() return {a.delay_ms} end\n")
    wrk = None
    rows = []
    try:
        while get(base + "/ready")[0] != 200:
            if serve.poll() is not None:
                sys.exit("serve died")
            time.sleep(0.2)
        secs = int(a.minutes * 60)
        wrk = subprocess.Popen(["wrk", "-t1", f"-c{a.rate_conns}", f"-d{secs}s", "--latency", "-s", lua,
                                "-H", f"X-Api-Key: {KEY}", base + "/get-proxy"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started = time.time()
        last = None
        while wrk.poll() is None:
            time.sleep(0.5)
            st = json.loads(get(base + "/stat")[1] or b"{}")
            rid = st.get("last_round", {}).get("round_id")
            if rid is not None and rid != last:
                last = rid
                rss, fds, threads = proc_sample(serve.pid)
                t = tasks(base)
                lr = st["last_round"]
                rows.append({"round": rid, "min": (time.time() - started) / 60, "rss": rss, "fds": fds,
                             "threads": threads, "api_tasks": t.get("api"), "checker_tasks": t.get("checker"),
                             "alive": lr.get("alive"), "dead": lr.get("dead"), "secs": lr.get("duration_ms", 0) / 1000})
                r = rows[-1]
                print(f"round {rid} at {r['min']:.1f} min: rss {rss:.1f} MiB, fds {fds}, threads {threads}, "
                      f"tasks api {r['api_tasks']} checker {r['checker_tasks']}, alive {r['alive']}", file=sys.stderr)
        out_text = wrk.stdout.read()
    finally:
        for p in (wrk, serve):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        farm.send_signal(signal.SIGINT)
        serve.wait(30)
    w = wrk_summary(out_text)

    out = []
    host = os.uname()
    out.append(f"### Soak: {len(rows)} realistic 20k rounds in {a.minutes:g} minutes under steady API load\n")
    out.append(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {host.nodename} ({os.cpu_count()} cores), "
               f"`python3 bench/soak.py --minutes {a.minutes:g}`. wrk: {a.rate_conns} connections, "
               f"{a.delay_ms} ms between requests on each.\n")
    out.append("| round | minute | RSS (MiB) | fds | threads | tasks api | tasks checker | alive | dead | round (s) |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    step = max(1, len(rows) // 40)
    for r in rows[::step] + ([rows[-1]] if rows and (len(rows) - 1) % step else []):
        out.append(f"| {r['round']} | {r['min']:.1f} | {r['rss']:.1f} | {r['fds']} | {r['threads']} | "
                   f"{r['api_tasks']} | {r['checker_tasks']} | {r['alive']} | {r['dead']} | {r['secs']:.1f} |")
    if len(rows) >= 10:
        k = max(3, len(rows) // 5)
        head, tail = rows[1:k + 1], rows[-k:]
        def med(rs, key):
            return statistics.median(r[key] for r in rs)
        out.append(f"\nMedians, rounds 2–{k + 1} vs the last {k}: RSS {med(head, 'rss'):.1f} → {med(tail, 'rss'):.1f} MiB, "
                   f"fds {med(head, 'fds'):.0f} → {med(tail, 'fds'):.0f}, threads {med(head, 'threads'):.0f} → "
                   f"{med(tail, 'threads'):.0f}, checker tasks {med(head, 'checker_tasks'):.0f} → "
                   f"{med(tail, 'checker_tasks'):.0f}, API tasks {med(head, 'api_tasks'):.0f} → {med(tail, 'api_tasks'):.0f}.")
    out.append(f"\nAPI: {w['total']} requests, **{w['non2xx']} non-2xx, {w['errors']} socket errors**; "
               f"latency p50 {w['p50']:.2f} ms, p99 {w['p99']:.2f} ms.\n")
    write_report("soak.md", "\n".join(out))


if __name__ == "__main__":
    main()
