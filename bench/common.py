"""Helpers shared by the benchmark drivers (run them as `python3 bench/<driver>.py`)."""
import os, re, socket, subprocess, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def http(method, url, key=None):
    """(status, body); status 0 when nothing answers."""
    req = urllib.request.Request(url, method=method, headers={"X-Api-Key": key} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError):
        return 0, b""


def build_release():
    subprocess.run(["cargo", "build", "--release", "--workspace"], cwd=ROOT, check=True, capture_output=True)


def write_report(name, md):
    """Prints the Markdown report and keeps it in bench-out/<name>."""
    print(md)
    os.makedirs(os.path.join(ROOT, "bench-out"), exist_ok=True)
    open(os.path.join(ROOT, "bench-out", name), "w").write(md + "\n")


def proc_status(pid, field):
    """A `/proc/<pid>/status` field as a number (VmRSS and VmHWM in MiB)."""
    v = int(re.search(rf"{field}:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1))
    return v / 1024 if field.startswith("Vm") else v


def wrk_summary(out):
    """What wrk printed: req/s, requests, non-2xx, socket errors, p50/p99 in ms (with --latency)."""
    def lat(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return None
        v, u = float(m.group(1)), m.group(2)
        return v / 1000 if u == "us" else v * 1000 if u == "s" else v

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    errs = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out)) if "Socket errors" in out else 0
    return {"rps": rps, "p50": lat(50), "p99": lat(99), "total": total, "non2xx": non2xx, "errors": errs}


BENCH_KEY = "bench-key-0123456789abcdef"


def wait(cond, what, timeout=300):
    """Polls `cond` every 100 ms; exits the benchmark after `timeout` seconds."""
    import sys, time
    end = time.time() + timeout
    while not cond():
        if time.time() > end:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.1)


def serve_config(info, port, tmp, checker=None, aggregation=None):
    """A `serve` config over the farm `info` (its printed JSON line): the farm's list and
    judge, API on `port` with the bench key and no effective rate limit, file storage in
    `tmp`; `checker` and `aggregation` keys added or overridden."""
    return {
        "sources": [info["list_url"]],
        "aggregation": {"interval_secs": 86400, "allow_private_sources": True, **(aggregation or {})},
        "checker": {"judge_url": info["judge_url"], "allow_private": True, "concurrency_total": 25000,
                    **(checker or {})},
        "api": {"listen": f"127.0.0.1:{port}", "api_keys": [BENCH_KEY], "rate_limit_per_minute": 10000000,
                "rate_limit_per_ip_per_minute": 10000000, "reload_min_interval_secs": 0},
        "storage": {"type": "file", "path": os.path.join(tmp, "snap.json")},
        "log": {"level": "warn", "format": "json"},
    }


def stop(*procs):
    """SIGTERM to `serve` and nginx, SIGINT to the farm (its Ctrl-C); kill after 15 s."""
    import signal
    for p in procs:
        if p and p.poll() is None:
            p.send_signal(signal.SIGINT if "proxy-farm" in str(p.args) else signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
