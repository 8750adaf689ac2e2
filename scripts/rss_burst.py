#!/usr/bin/env python3
"""RSS of `weir serve` with N idle keep-alive connections, and after they are gone.

    python3 scripts/rss_burst.py target/release/weir [N]

Starts two `weir upstream`s and `weir serve` on free ports, opens N connections that each send
one `GET /pay` and keep the connection open, and prints VmRSS: at start, with the N connections
idle, 5 s after they closed, and after a second burst and close (memory given back, and not
growing burst after burst).
"""
import os, re, socket, subprocess, sys, time

weir = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
here = os.path.dirname(os.path.abspath(__file__))
config = open(os.path.join(here, "..", "config", "payment-svc.yaml")).read()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


p1, p2 = free_port(), free_port()
ups = [subprocess.Popen([weir, "upstream", "--listen", f"127.0.0.1:{p}", "--name", name],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
       for p, name in ((p1, "v1"), (p2, "v2"))]
path = f"/tmp/rss-burst-{os.getpid()}.yaml"
open(path, "w").write(config.replace("http: 18081", f"http: {p1}").replace("http: 18082", f"http: {p2}"))
serve = subprocess.Popen([weir, "serve", "--config", path, "--listen", "127.0.0.1:0", "--admin",
                          "127.0.0.1:0", "--workers", "2", "--state", path + ".state.json"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
line = serve.stdout.readline()
proxy = re.search(r"proxy=(\S+)", line).group(1)
host, port = proxy.rsplit(":", 1)
time.sleep(0.5)


def rss_kb():
    fds = len(os.listdir(f"/proc/{serve.pid}/fd"))
    for l in open(f"/proc/{serve.pid}/status"):
        if l.startswith("VmRSS:"):
            return f"{int(l.split()[1])} KiB RSS, {fds} fds open"


def burst():
    conns = []
    request = b"GET /pay HTTP/1.1\r\nhost: payment-svc\r\n\r\n"
    for _ in range(n):
        s = socket.create_connection((host, int(port)))
        s.sendall(request)
        got = b""
        while b"\r\n\r\n" not in got:
            got += s.recv(4096)
        head, body = got.split(b"\r\n\r\n", 1)
        length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
        while len(body) < length:
            body += s.recv(4096)
        conns.append(s)
    return conns


try:
    print(f"start: {rss_kb()}")
    conns = burst()
    time.sleep(1)
    print(f"{n} idle keep-alive connections: {rss_kb()}")
    for s in conns:
        s.close()
    time.sleep(5)
    print(f"5 s after they closed: {rss_kb()}")
    for i in range(2, 2 + int(os.environ.get("BURSTS", "1"))):
        for s in burst():
            s.close()
        time.sleep(5)
        print(f"after burst {i} of {n}, 5 s after: {rss_kb()}")
finally:
    serve.terminate()
    for u in ups:
        u.terminate()
    for f in (path, path + ".state.json"):
        if os.path.exists(f):
            os.remove(f)
