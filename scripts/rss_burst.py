#!/usr/bin/env python3
"""Memory of a proxy with N idle keep-alive connections, and after they are gone.

    python3 scripts/rss_burst.py [-n N] [--bursts K] [--workers W] CONTENDER...

CONTENDER is `LABEL=PATH/TO/weir` (a weir build: mimalloc by default, the system allocator with
`--no-default-features`) or `nginx` (the nginx on PATH, configured as tools/bench-compare's:
same upstreams, same 90/10 split). Every contender runs in turn against two `weir upstream`s
(from the first weir given) with W workers (threads for weir, processes for nginx).

For each: N connections that each send one `GET /pay`, read the answer and stay open; the
memory (RSS summed over the process tree, and PSS, which counts shared pages once) at start,
with the N connections idle, 5 s after they closed, and 5 s after each of K more bursts
(opened, answered, closed). Prints one markdown table.
"""
import argparse, os, re, shutil, signal, socket, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
CONFIG = open(os.path.join(here, "..", "config", "payment-svc.yaml")).read()
NGINX = """daemon off;
master_process on;
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream v1 {{ server 127.0.0.1:{p1}; keepalive 1024; }}
    upstream v2 {{ server 127.0.0.1:{p2}; keepalive 1024; }}
    split_clients "${{request_id}}" $split_pool {{ 90% v1; * v2; }}
    map $http_x_canary $pool {{ "true" v2; default $split_pool; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://$pool;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc):
    for _ in range(200):
        if proc.poll() is not None:
            sys.exit(f"exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listening on {port}")


def tree(root):
    """The pids of `root` and its descendants."""
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
                parents[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    pids, frontier = [root], [root]
    while frontier:
        frontier = [p for p, pp in parents.items() if pp in frontier]
        pids += frontier
    return pids


def memory_mib(root):
    """(RSS, PSS) of the process tree, in MiB."""
    rss = pss = 0
    for pid in tree(root):
        try:
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return rss / 1024, pss / 1024


def burst(port, n):
    conns = []
    request = b"GET /pay HTTP/1.1\r\nhost: payment-svc\r\n\r\n"
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = s.recv(4096)
            if not chunk:
                sys.exit(f"connection closed after {len(conns)} of {n}: {got!r}")
            got += chunk
        head, body = got.split(b"\r\n\r\n", 1)
        length = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))
        while len(body) < length:
            body += s.recv(4096)
        conns.append(s)
    return conns


def start_weir(weir, port, p1, p2, workers, d):
    path = os.path.join(d, "config.yaml")
    open(path, "w").write(CONFIG.replace("http: 18081", f"http: {p1}").replace("http: 18082", f"http: {p2}"))
    return subprocess.Popen([weir, "serve", "--config", path, "--listen", f"127.0.0.1:{port}",
                             "--admin", "127.0.0.1:0", "--workers", str(workers),
                             "--state", path + ".state.json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_nginx(port, p1, p2, workers, d):
    conf = os.path.join(d, "nginx.conf")
    open(conf, "w").write(NGINX.format(workers=workers, d=d, p1=p1, p2=p2, port=port))
    return subprocess.Popen(["nginx", "-c", conf, "-p", d], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def measure(label, start, args):
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        proc = start(port, d)
        try:
            wait_port(port, proc)
            for s in burst(port, 10):
                s.close()
            time.sleep(1)
            row = [memory_mib(proc.pid)]
            conns = burst(port, args.n)
            time.sleep(1)
            row.append(memory_mib(proc.pid))
            for s in conns:
                s.close()
            time.sleep(5)
            row.append(memory_mib(proc.pid))
            for _ in range(args.bursts):
                for s in burst(port, args.n):
                    s.close()
                time.sleep(5)
                row.append(memory_mib(proc.pid))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    cells = " | ".join(f"{rss:.1f} ({pss:.1f})" for rss, pss in row)
    print(f"| {label} | {cells} |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=5000, help="connections per burst (default 5000)")
    ap.add_argument("--bursts", type=int, default=2, help="bursts after the first (default 2)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("contenders", nargs="+")
    args = ap.parse_args()
    weirs = [c.split("=", 1) for c in args.contenders if "=" in c]
    if not weirs:
        sys.exit("give at least one LABEL=PATH/TO/weir (its `weir upstream` serves every contender)")
    p1, p2 = free_port(), free_port()
    ups = [subprocess.Popen([weirs[0][1], "upstream", "--listen", f"127.0.0.1:{p}", "--name", name],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
           for p, name in ((p1, "v1"), (p2, "v2"))]
    try:
        for p, u in zip((p1, p2), ups):
            wait_port(p, u)
        later = " | ".join(f"after burst {i + 2}" for i in range(args.bursts))
        print(f"MiB, RSS (PSS); {args.n} connections per burst, {args.workers} workers\n")
        print(f"| contender | start | {args.n} idle keep-alives | 5 s after close | {later} |")
        print("|---" * (4 + args.bursts) + "|")
        for c in args.contenders:
            if c == "nginx":
                if shutil.which("nginx") is None:
                    sys.exit("nginx is not on PATH")
                measure("nginx", lambda port, d: start_nginx(port, p1, p2, args.workers, d), args)
            else:
                label, weir = c.split("=", 1)
                measure(label, lambda port, d, w=weir: start_weir(w, port, p1, p2, args.workers, d), args)
    finally:
        for u in ups:
            u.terminate()


if __name__ == "__main__":
    main()
