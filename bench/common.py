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
