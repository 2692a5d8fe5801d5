"""What each proxy cost on the wire, from a packet capture: the truth a checker's reported
latency is held against.

`capture(port)` runs tcpdump on loopback for the farm's proxy port while a check runs;
`proxy_costs(pcap)` reads the capture and gives, per proxy address, the least cost of its
checks as the wire saw them: the TCP handshake (SYN to SYN-ACK) plus, for each request on
the connection, the time from the request's first packet to the answer's first packet. Our
own delays (between an answer and our next request) are not in it, nor is any queueing
inside either process: only what crossed the wire, when.

A full check of an HTTP proxy is a forward exchange (its cost: handshake + first exchange)
and a tunnel (handshake + the CONNECT's exchange + the judge's inside), on one connection
or two; the reported latency is the cheaper of the two, and so is the truth here.
"""
import collections, os, signal, struct, subprocess, time


class Capture:
    def __init__(self, port, path):
        self.path = path
        self.proc = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-s", "128", "-B", "131072", "--time-stamp-precision=nano", "-U", "-w", path,
             f"tcp port {port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # tcpdump says "listening on lo" once the capture runs.
        self.proc.stderr.readline()
        time.sleep(0.2)

    def stop(self):
        """Stops the capture; returns the packets the kernel dropped (0 for a whole capture)."""
        time.sleep(0.2)
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=60)
        dropped = 0
        for line in err.splitlines():
            if "dropped by kernel" in line:
                dropped = int(line.split()[0])
        return dropped


def packets(path):
    """(time ns, src ip, src port, dst ip, dst port, flags, payload length, first payload bytes)."""
    with open(path, "rb") as f:
        head = f.read(24)
        magic = struct.unpack("<I", head[:4])[0]
        assert magic == 0xA1B23C4D, f"not a nanosecond pcap: {magic:#x}"
        link = struct.unpack("<I", head[20:24])[0]
        skip = {1: 14, 113: 16, 276: 20}.get(link)
        assert skip is not None, f"link type {link}"
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                return
            sec, nsec, incl, _ = struct.unpack("<IIII", rec)
            data = f.read(incl)
            ip = data[skip:]
            if len(ip) < 20 or ip[0] >> 4 != 4:
                continue
            ihl = (ip[0] & 15) * 4
            total = struct.unpack(">H", ip[2:4])[0]
            tcp = ip[ihl:]
            if len(tcp) < 20:
                continue
            sport, dport = struct.unpack(">HH", tcp[:4])
            off = (tcp[12] >> 4) * 4
            flags = tcp[13]
            payload = total - ihl - off
            yield (sec * 10**9 + nsec, ip[12:16], sport, ip[16:20], dport, flags, payload, tcp[off:off + 8])


def proxy_costs(path, port):
    """Least wire cost in ms per proxy address ("a.b.c.d"), and how many connections each had."""
    syn, synack = {}, {}
    # Per connection: the exchanges' costs so far, the pending request's time, whether the
    # first request was a CONNECT.
    exchanges = collections.defaultdict(list)
    pending = {}
    first = {}
    for t, src, sport, dst, dport, flags, payload, start in packets(path):
        client_side = dport == port
        proxy = dst if client_side else src
        # One source port serves several destinations at once: the proxy is in the key.
        key = (src, sport, proxy) if client_side else (dst, dport, proxy)
        if flags & 0x02 and not flags & 0x10:
            # A SYN sent again (no SYN-ACK yet) keeps the first one's time: the wait is the
            # proxy host's (a full listen queue). A SYN after a finished connection on the
            # same port starts a new one.
            if key in syn and key not in synack:
                continue
            syn[key] = t
            for d in (synack, exchanges, pending, first):
                d.pop(key, None)
            continue
        if flags & 0x02 and flags & 0x10:
            synack.setdefault(key, t)
            continue
        if payload <= 0:
            continue
        if client_side:
            first.setdefault(key, (proxy, start.startswith(b"CONNECT")))
            pending.setdefault(key, t)
        elif key in pending:
            exchanges[key].append(t - pending.pop(key))
    best, conns = {}, collections.Counter()
    for key, ex in exchanges.items():
        if key not in syn or key not in synack or key not in first:
            continue
        proxy, is_tunnel = first[key]
        addr = ".".join(str(b) for b in proxy)
        conns[addr] += 1
        hand = synack[key] - syn[key]
        costs = []
        if is_tunnel and len(ex) >= 2:
            costs.append(hand + ex[0] + ex[1])
        elif not is_tunnel:
            costs.append(hand + ex[0])
            if len(ex) >= 3:
                costs.append(hand + ex[1] + ex[2])
        for c in costs:
            best[addr] = min(best.get(addr, c), c)
    return {a: c / 1e6 for a, c in best.items()}, conns
