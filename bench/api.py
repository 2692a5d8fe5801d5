#!/usr/bin/env python3
"""API benchmark: `/get-proxy` of `proxy-checker serve` holding 20,000 proxies, next to nginx
serving a static file of the same size, under wrk, in the same run; then the same load while
`POST /reload` runs 20 rounds; then alternating runs with rechecks of the pool on
(`checker.recheck_interval_secs` = `--recheck-secs`, default 60: all 20,000 proxies rechecked)
and off, switched by rewriting the watched config; and the peak RSS of `serve` through a
20k-proxy round.

Usage: python3 bench/api.py [--reps N] [--duration S] [--reload-rounds N] [--recheck-secs S]
Needs wrk and nginx (Debian: apt-get install wrk nginx-light). Prints Markdown, also
written to bench-out/api.md.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, threading, time

from common import BENCH_KEY as KEY, REL, build_release, free_port, proc_status, serve_config, stop, wait
from common import wrk_summary, write_report
import common


def http(method, url, key=True):
    return common.http(method, url, KEY if key else None)


def wrk(url, duration, conns=256, threads=2, header=True):
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency", url]
    if header:
        cmd[1:1] = ["-H", f"X-Api-Key: {KEY}"]
    out = subprocess.run(cmd, text=True, capture_output=True, check=True).stdout

    return wrk_summary(out)


def rechecks_of(base):
    text = http("GET", base + "/metrics", key=False)[1].decode()
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith("proxychecker_rechecks_total{"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--reload-rounds", type=int, default=20)
    ap.add_argument("--recheck-secs", type=int, default=60)
    a = ap.parse_args()
    build_release()
    tmp = tempfile.mkdtemp(prefix="pc-api-bench-")
    farm = subprocess.Popen([os.path.join(REL, "proxy-farm"), "--working", "20000", "--out", tmp, "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    info = json.loads(farm.stdout.readline())
    port = free_port()
    cfg = serve_config(info, port, tmp, checker={"recheck_interval_secs": 0})
    cfg_path = os.path.join(tmp, "config.json")
    json.dump(cfg, open(cfg_path, "w"))
    serve = subprocess.Popen([os.path.join(REL, "proxy-checker"), "serve", "--config", cfg_path],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    rechecks = lambda: rechecks_of(base)
    nginx = None
    try:
        wait(lambda: http("GET", base + "/ready", key=False)[0] == 200 if serve.poll() is None else sys.exit("serve died"),
             "the first round")
        hwm = proc_status(serve.pid, "VmHWM")
        stat = json.loads(http("GET", base + "/stat")[1])
        alive = stat["pool"]["alive"]
        round_ms = stat["last_round"]["duration_ms"]
        one = http("GET", base + "/get-proxy")[1]

        # nginx serving a static file of the same size as one /get-proxy answer.
        www = os.path.join(tmp, "www")
        os.makedirs(www)
        open(os.path.join(www, "p.txt"), "wb").write(one)
        # nginx workers drop privileges: let them read the file.
        for path, mode in ((tmp, 0o755), (www, 0o755), (os.path.join(www, "p.txt"), 0o644)):
            os.chmod(path, mode)
        nport = free_port()
        conf = os.path.join(tmp, "nginx.conf")
        open(conf, "w").write(f"""
worker_processes auto; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{ access_log off; server {{ listen 127.0.0.1:{nport}; root {www}; location / {{ default_type text/plain; }} }} }}
""")
        nginx = subprocess.Popen(["nginx", "-c", conf, "-p", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait(lambda: http("GET", f"http://127.0.0.1:{nport}/p.txt", key=False)[0] == 200, "nginx")
        nver = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
        wver = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0]

        api_rows, ngx_rows = [], []
        for _ in range(a.reps):
            api_rows.append(wrk(base + "/get-proxy", a.duration))
            ngx_rows.append(wrk(f"http://127.0.0.1:{nport}/p.txt", a.duration, header=False))
        med = lambda rows, k: statistics.median(r[k] for r in rows)

        # The same load while POST /reload runs rounds back to back.
        done = {"rounds": 0}

        def reloader():
            for _ in range(a.reload_rounds):
                r = json.loads(http("POST", base + "/reload")[1])
                rid = r["round_id"]
                wait(lambda: json.loads(http("GET", base + "/stat")[1])["last_round"]["round_id"] >= rid, "round")
                done["rounds"] += 1
        est = int(a.reload_rounds * (round_ms / 1000.0) * 2.5) + 20
        t = threading.Thread(target=reloader)
        t.start()
        under = wrk(base + "/get-proxy", est)
        t.join()

        # Rechecks on and off, alternating, in the same process (the config is watched).
        def set_recheck(secs):
            cfg["checker"]["recheck_interval_secs"] = secs
            tmp_cfg = cfg_path + ".new"
            json.dump(cfg, open(tmp_cfg, "w"))
            os.rename(tmp_cfg, cfg_path)
            want = secs if secs else None
            wait(lambda: json.loads(http("GET", base + "/stat")[1])["freshness"]["recheck_interval_secs"] == want,
                 "the config reload")

        def last_pass():
            p = json.loads(http("GET", base + "/stat")[1])["freshness"]["last_recheck"]
            return p["finished_at"] if p else 0

        on_rows, off_rows, rechecked = [], [], []
        for _ in range(a.reps):
            set_recheck(a.recheck_secs)
            seen = last_pass()
            wait(lambda: last_pass() > seen, "a recheck pass")
            before = rechecks()
            on_rows.append(wrk(base + "/get-proxy", a.duration))
            rechecked.append((rechecks() - before) / a.duration)
            set_recheck(0)
            off_rows.append(wrk(base + "/get-proxy", a.duration))
    finally:
        stop(serve, farm, nginx)
    exit_code = serve.returncode

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    out = ["## API results", "",
           f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
           f"- machine: {os.cpu_count()} CPUs ({cpu}); server, nginx, wrk and the farm share them",
           f"- {wver}; {nver}; wrk -t2 -c256 -d{a.duration}s --latency, {a.reps} alternating runs each",
           f"- snapshot: {alive} proxies; `GET /get-proxy` (one proxy, round-robin, text, with X-Api-Key) "
           f"vs nginx serving a {len(one)}-byte static file", "",
           "| run | proxy-checker req/s | p50 ms | p99 ms | nginx req/s | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|"]
    for i in range(a.reps):
        x, n = api_rows[i], ngx_rows[i]
        out.append(f"| {i+1} | {x['rps']:.0f} | {x['p50']:.2f} | {x['p99']:.2f} | {n['rps']:.0f} | {n['p50']:.2f} | {n['p99']:.2f} |")
    ratio = med(api_rows, "rps") / med(ngx_rows, "rps")
    bad = sum(r["non2xx"] + r["errors"] for r in api_rows)
    out += ["", f"Medians: proxy-checker {med(api_rows, 'rps'):.0f} req/s, p99 {med(api_rows, 'p99'):.2f} ms; "
            f"nginx {med(ngx_rows, 'rps'):.0f} req/s, p99 {med(ngx_rows, 'p99'):.2f} ms. "
            f"Ratio **{ratio:.2f}** (target ≥ 0.8); p99 target < 10 ms. Failed or non-2xx responses: {bad}.", "",
            f"### Under reload: {done['rounds']} rounds of {alive} proxies while wrk ran {est}s", "",
            f"{under['total']} requests, {under['rps']:.0f} req/s, p50 {under['p50']:.2f} ms, p99 {under['p99']:.2f} ms; "
            f"non-2xx {under['non2xx']}, socket errors {under['errors']} (target: 0 and 0).", "",
            f"### With rechecks: every proxy rechecked every {a.recheck_secs} s, alternating with rechecks off", "",
            "| run | rechecks on: req/s | p50 ms | p99 ms | rechecks/s | rechecks off: req/s | p50 ms | p99 ms |",
            "|---|---|---|---|---|---|---|---|"]
    for i in range(a.reps):
        x, n = on_rows[i], off_rows[i]
        out.append(f"| {i+1} | {x['rps']:.0f} | {x['p50']:.2f} | {x['p99']:.2f} | {rechecked[i]:.0f} | "
                   f"{n['rps']:.0f} | {n['p50']:.2f} | {n['p99']:.2f} |")
    out += ["", f"Medians: rechecks on {med(on_rows, 'rps'):.0f} req/s, p99 {med(on_rows, 'p99'):.2f} ms "
            f"({statistics.median(rechecked):.0f} rechecks/s); off {med(off_rows, 'rps'):.0f} req/s, "
            f"p99 {med(off_rows, 'p99'):.2f} ms; ratio on/off **{med(on_rows, 'rps') / med(off_rows, 'rps'):.2f}**. "
            f"Failed or non-2xx: {sum(r['non2xx'] + r['errors'] for r in on_rows + off_rows)}.", "",
            "### Memory", "", f"Peak RSS (VmHWM) of `serve` through its first 20,000-proxy round "
            f"({round_ms} ms): **{hwm:.1f} MiB**. `serve` exited with code {exit_code} on SIGTERM.", ""]
    write_report("api.md", "\n".join(out))


if __name__ == "__main__":
    main()
