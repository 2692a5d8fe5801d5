#!/usr/bin/env python3
"""Hostile load, release binaries, one run:

1. Hostile proxies at scale: `proxy-checker check` against 7,000 farm proxies that attack
   the reader (endless head, 4 GB body, slowloris trickle, bogus SOCKS replies, TLS
   garbage) beside 2,000 working ones, through the HTTPS judge: wall time, peak RSS, and
   the verdicts by reason.
2. A million client addresses: `serve` behind a trusted proxy (`trusted_proxies`), wrk sending requests
   from random X-Forwarded-For addresses until a million have been sent, while a second
   wrk plays the good client: the good client's latency, serve's RSS before/after, and
   the per-IP limiter's tracked-address gauge (bounded at 150,000: 50,000 seen once,
   100,000 seen again; no shared bucket).

Usage: python3 bench/hostile.py. Needs wrk. Markdown to stdout and bench-out/hostile.md.
"""
import json, os, re, signal, subprocess, sys, tempfile, time

from common import REL, build_release, free_port, http, proc_status, wrk_summary, write_report

KEY = "hostile-key-0123456789abcdef"


def get(url):
    return http("GET", url, KEY)


def farm(spec, tmp):
    path = os.path.join(tmp, "spec.json")
    json.dump(spec, open(path, "w"))
    p = subprocess.Popen([os.path.join(REL, "proxy-farm"), "--spec", path, "--out", tmp, "--threads", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return p, json.loads(p.stdout.readline())


def hostile_proxies(out):
    tmp = tempfile.mkdtemp(prefix="pc-hostile-")
    groups = [{"count": 2000, "protocol": "http", "behavior": "working", "latency_ms": 0}]
    for proto in ("http", "socks5"):
        for b in ("endless_header", "huge_body", "trickle", "tls_garbage"):
            groups.append({"count": 625, "protocol": proto, "behavior": b, "latency_ms": 0})
    groups.append({"count": 1000, "protocol": "socks4", "behavior": "bogus_socks", "latency_ms": 0})
    groups.append({"count": 1000, "protocol": "socks5", "behavior": "bogus_socks", "latency_ms": 0})
    proc, info = farm({"groups": groups}, tmp)
    total = sum(g["count"] for g in groups)
    try:
        cmd = ["/usr/bin/time", "-f", "TIME %e %M", os.path.join(REL, "proxy-checker"), "check", "--allow-private",
               "--judge-url", info["judge_tls_url"], "--ca-file", os.path.join(tmp, "ca.pem"),
               "--source", info["list_file"], "--timeout-ms", "5000", "--connect-timeout-ms", "2000",
               "--retries", "0", "--concurrency", "20000", "-o", "/dev/null"]
        t = subprocess.run(cmd, text=True, capture_output=True)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    m = re.search(r"TIME ([\d.]+) (\d+)", t.stderr)
    wall, rss = float(m.group(1)), int(m.group(2)) / 1024
    head = re.search(r"checked (\d+) in [\d.]+s \(\d+/s\): (\d+) alive, (\d+) dead", t.stderr)
    reasons = re.findall(r"^  ([a-z_]+)\s+(\d+)(?:\s|$)", t.stderr, re.M)
    out.append(f"### Hostile proxies: {total:,} ({total - 2000:,} hostile, 2,000 working), HTTPS judge\n")
    out.append("`check --retries 0 --timeout-ms 5000 --connect-timeout-ms 2000 --concurrency 20000` (clamped by the fd "
               "limit). 625 each of endless head, 4 GB body, slowloris trickle, TLS garbage, for HTTP and SOCKS5 "
               "proxies; 1,000 each of bogus SOCKS4 and SOCKS5 replies.\n")
    out.append(f"Wall {wall:.1f} s, **peak RSS {rss:.1f} MiB**; checked {head.group(1)}: {head.group(2)} alive, "
               f"{head.group(3)} dead.\n")
    out.append("| reason | dead |\n|---|---|")
    for r, n in reasons:
        out.append(f"| {r} | {n} |")
    out.append("")


def million_ips(out):
    tmp = tempfile.mkdtemp(prefix="pc-ips-")
    proc, info = farm({"groups": [{"count": 2000, "protocol": "http", "behavior": "working", "latency_ms": 0}]}, tmp)
    port = free_port()
    cfg = {
        "sources": [info["list_url"]],
        "aggregation": {"interval_secs": 86400, "allow_private_sources": True},
        "checker": {"judge_url": info["judge_url"], "allow_private": True},
        "api": {"listen": f"127.0.0.1:{port}", "api_keys": [KEY], "rate_limit_per_minute": 10000000,
                "rate_limit_per_ip_per_minute": 60000, "trusted_proxies": ["127.0.0.1"]},
        "storage": {"type": "file", "path": os.path.join(tmp, "snap.json")},
        "log": {"level": "warn"},
    }
    json.dump(cfg, open(os.path.join(tmp, "c.json"), "w"))
    serve = subprocess.Popen([os.path.join(REL, "proxy-checker"), "serve", "--config", os.path.join(tmp, "c.json")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    crowd_lua = os.path.join(tmp, "crowd.lua")
    open(crowd_lua, "w").write("""
local n = 0
local limit = 1000000
function setup(thread) thread:set("id", thread_id or 0) end
init = function(args) math.randomseed(os.time() + (id or 0)) end
request = function()
  n = n + 1
  local ip = string.format("%d.%d.%d.%d", math.random(1, 223), math.random(0, 255), math.random(0, 255), math.random(1, 254))
  return wrk.format("GET", "/get-proxy", {["X-Api-Key"] = "KEY", ["X-Forwarded-For"] = ip})
end
""".replace("KEY", KEY))
    good_lua = os.path.join(tmp, "good.lua")
    open(good_lua, "w").write("function delay() return 10 end\n")
    try:
        while get(base + "/ready")[0] != 200:
            if serve.poll() is not None:
                sys.exit("serve exited; run it by hand with the config in " + tmp)
            time.sleep(0.2)
        rss0 = proc_status(serve.pid, "VmRSS")
        good = subprocess.Popen(["wrk", "-t1", "-c4", "-d40s", "--latency", "-s", good_lua, "-H", f"X-Api-Key: {KEY}",
                                 "-H", "X-Forwarded-For: 198.51.100.7", base + "/get-proxy"],
                                stdout=subprocess.PIPE, text=True)
        crowd = subprocess.run(["wrk", "-t1", "-c64", "-d40s", "-s", crowd_lua, base + "/get-proxy"],
                               capture_output=True, text=True).stdout
        good_out = good.communicate()[0]
        rss1, hwm = proc_status(serve.pid, "VmRSS"), proc_status(serve.pid, "VmHWM")
        metrics = get(base + "/metrics")[1].decode()
        tracked = re.search(r"^proxychecker_rate_limiter_clients (\d+)", metrics, re.M).group(1)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    c, g = wrk_summary(crowd), wrk_summary(good_out)
    sent, c_bad, rps = c["total"], c["non2xx"] + c["errors"], f"{c['rps']:.0f}"
    out.append(f"### A crowd of client addresses: {sent:,} requests from random X-Forwarded-For addresses in 40 s\n")
    out.append(f"wrk -c64 at {rps} req/s, each request from a random address (≈{sent:,} distinct); per-IP limit "
               f"60,000/min. The crowd: {sent - c_bad:,} answered 2xx, {c_bad:,} not. Meanwhile a good "
               f"client (4 connections, 10 ms apart, one address, under its limit):\n")
    out.append(f"- good client: {g['total']} requests, {g['non2xx']} non-2xx, {g['errors']} socket errors; "
               f"latency p50 {g['p50']:.2f} ms, **p99 {g['p99']:.2f} ms**")
    out.append(f"- serve RSS {rss0:.1f} → {rss1:.1f} MiB (peak {hwm:.1f}); limiter tracks **{tracked}** addresses "
               f"(bound 150,000, no shared bucket: a flood only churns the table of addresses seen once)\n")


def main():
    import argparse
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    build_release()
    out = [f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.uname().nodename} ({os.cpu_count()} cores), "
           "`python3 bench/hostile.py`\n"]
    hostile_proxies(out)
    million_ips(out)
    write_report("hostile.md", "\n".join(out))


if __name__ == "__main__":
    main()
