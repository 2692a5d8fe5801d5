#!/usr/bin/env python3
"""API benchmark: `/get-proxy` of `proxy-checker serve` holding 20,000 proxies, next to nginx
serving a static file of the same size, under wrk, in the same run; then the same load while
`POST /reload` runs 20 rounds; then alternating runs with rechecks of the pool on
(`checker.recheck_interval_secs` = `--recheck-secs`, default 60: all 20,000 proxies rechecked)
and off, switched by rewriting the watched config; and the peak RSS of `serve` through a
20k-proxy round.

The comparison with nginx runs four loads, alternating server and nginx in each: wrk -t1 and
-t2 (256 connections) on the default answer (one proxy, text) and on `limit=10&format=json`
(nginx serves a file of the same bytes for each).

Usage: python3 bench/api.py [--reps N] [--duration S] [--reload-rounds N] [--recheck-secs S]
                            [--only compare]
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
    ap.add_argument("--only", choices=["compare"], help="only the comparison with nginx")
    ap.add_argument("--baseline", help="another proxy-checker binary (an earlier build) run beside it in the "
                    "comparison, on the same farm")
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
    nginx = old = None
    if a.baseline:
        old_port, old_dir = free_port(), os.path.join(tmp, "baseline")
        os.makedirs(old_dir)
        old_cfg = os.path.join(old_dir, "config.json")
        json.dump(serve_config(info, old_port, old_dir, checker={"recheck_interval_secs": 0}), open(old_cfg, "w"))
        old = subprocess.Popen([a.baseline, "serve", "--config", old_cfg], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        old_base = f"http://127.0.0.1:{old_port}"
    try:
        if old:
            wait(lambda: http("GET", old_base + "/ready", key=False)[0] == 200, "the baseline's first round")
        wait(lambda: http("GET", base + "/ready", key=False)[0] == 200 if serve.poll() is None else sys.exit("serve died"),
             "the first round")
        hwm = proc_status(serve.pid, "VmHWM")
        stat = json.loads(http("GET", base + "/stat")[1])
        alive = stat["pool"]["alive"]
        round_ms = stat["last_round"]["duration_ms"]
        # nginx serving static files of the same bytes as the answers compared.
        www = os.path.join(tmp, "www")
        os.makedirs(www)
        loads = []
        for name, query in (("text", ""), ("json10", "?limit=10&format=json")):
            body = http("GET", base + "/get-proxy" + query)[1]
            open(os.path.join(www, name), "wb").write(body)
            for threads in (1, 2):
                loads.append((name, query, threads, len(body)))
        # nginx workers drop privileges: let them read the files.
        for path, mode in ((tmp, 0o755), (www, 0o755)):
            os.chmod(path, mode)
        for f in os.listdir(www):
            os.chmod(os.path.join(www, f), 0o644)
        nport = free_port()
        conf = os.path.join(tmp, "nginx.conf")
        open(conf, "w").write(f"""
worker_processes auto; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{ access_log off; server {{ listen 127.0.0.1:{nport}; root {www}; location / {{ default_type text/plain; }} }} }}
""")
        nginx = subprocess.Popen(["nginx", "-c", conf, "-p", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait(lambda: http("GET", f"http://127.0.0.1:{nport}/text", key=False)[0] == 200, "nginx")
        nver = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
        wver = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0]

        compared = []
        for name, query, threads, size in loads:
            api_rows, ngx_rows, old_rows = [], [], []
            for _ in range(a.reps):
                api_rows.append(wrk(base + "/get-proxy" + query, a.duration, threads=threads))
                if old:
                    old_rows.append(wrk(old_base + "/get-proxy" + query, a.duration, threads=threads))
                ngx_rows.append(wrk(f"http://127.0.0.1:{nport}/{name}", a.duration, threads=threads, header=False))
            compared.append((name, query, threads, size, api_rows, ngx_rows, old_rows))
        med = lambda rows, k: statistics.median(r[k] for r in rows)
        if a.only == "compare":
            return report(a, compared, wver, nver, alive, hwm=(hwm, round_ms))

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
        stop(serve, farm, nginx, old)
    exit_code = serve.returncode

    out = report(a, compared, wver, nver, alive, final=False)
    out += [f"### Under reload: {done['rounds']} rounds of {alive} proxies while wrk ran {est}s", "",
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


def report(a, compared, wver, nver, alive, final=True, hwm=None):
    """The comparison with nginx as Markdown; written out when `final`."""
    med = lambda rows, k: statistics.median(r[k] for r in rows)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    out = ["## API results", "",
           f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
           f"- machine: {os.cpu_count()} CPUs ({cpu}); server, nginx, wrk and the farm share them",
           f"- {wver}; {nver}; wrk -c256 -d{a.duration}s --latency, {a.reps} alternating runs each",
           f"- snapshot: {alive} proxies; `GET /get-proxy` with X-Api-Key (round-robin) vs nginx serving "
           "a static file of the same bytes", "",
           "| answer | wrk | proxy-checker req/s (runs) | p50 ms | p99 ms | nginx req/s (runs) | p50 ms | p99 ms "
           "| ratio | p99 − nginx's | non-2xx/errors |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    runs = lambda rows: ", ".join(f"{r['rps']:.0f}" for r in rows)
    for name, query, threads, size, api_rows, ngx_rows, old_rows in compared:
        bad = sum(r["non2xx"] + r["errors"] for r in api_rows + ngx_rows)
        out.append(f"| `{query or '(default)'}` ({size} B) | -t{threads} | **{med(api_rows, 'rps'):.0f}** "
                   f"({runs(api_rows)}) | {med(api_rows, 'p50'):.2f} | {med(api_rows, 'p99'):.2f} "
                   f"| {med(ngx_rows, 'rps'):.0f} ({runs(ngx_rows)}) | {med(ngx_rows, 'p50'):.2f} "
                   f"| {med(ngx_rows, 'p99'):.2f} | **{med(api_rows, 'rps') / med(ngx_rows, 'rps'):.2f}** "
                   f"| {med(api_rows, 'p99') - med(ngx_rows, 'p99'):+.2f} | {bad} |")
    if any(c[6] for c in compared):
        out += ["", f"Baseline (`{a.baseline}`), in the same alternation:", "",
                "| answer | wrk | baseline req/s (runs) | p50 ms | p99 ms | ratio to nginx | this build / baseline |",
                "|---|---|---|---|---|---|---|"]
        for name, query, threads, size, api_rows, ngx_rows, old_rows in compared:
            out.append(f"| `{query or '(default)'}` | -t{threads} | {med(old_rows, 'rps'):.0f} "
                       f"({runs(old_rows)}) "
                       f"| {med(old_rows, 'p50'):.2f} | {med(old_rows, 'p99'):.2f} "
                       f"| {med(old_rows, 'rps') / med(ngx_rows, 'rps'):.2f} "
                       f"| {med(api_rows, 'rps') / med(old_rows, 'rps'):.2f} |")
    out += ["", "Targets: ratio ≥ 1.0, p99 at most nginx's + 1 ms (issue 15); medians of the runs.", ""]
    if hwm:
        out += [f"Peak RSS (VmHWM) of `serve` through its first {alive}-proxy round ({hwm[1]} ms): "
                f"**{hwm[0]:.1f} MiB**.", ""]
    if final:
        write_report("api.md", "\n".join(out))
    return out


if __name__ == "__main__":
    main()
