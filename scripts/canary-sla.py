#!/usr/bin/env python3
"""The rollback SLA of `weir canary`, end to end, measured from the first failed request.

    cargo build -p weir && scripts/canary-sla.py --runs 5

For each scenario (v2 answering 25% 5xx, v2 800 ms slower, v2 answering 2% 5xx, and 25% 5xx
with the weights written to the config file) and each run: two local upstreams (v1 healthy, v2
faulty from its first request), `weir serve` in front of them at 100/0, steady keep-alive
traffic, and `weir canary --admin` (with `--file` in the last scenario: the sidecar reloads
the file on its 1 s poll) with a short spec (checks every 2 s, a fast guard looking every
second at the last 3 s, minRequests 10, gates: success rate >= 99%, p99 <= 500 ms). The canary's report.json gives, per run: which
rule fired, first failed request the sidecar counted -> detected -> 0% in force on every
replica -> first request on the stable subset. Prints the medians, as published in the
README's canary section. Nothing is asserted: timings belong in a report, not in a test.
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, v2's fault, whether the weights go through the config file, `--file`)
SCENARIOS = [
    ("25% errors", {"fail_every": 4, "delay": 0.0}, False),
    ("+800 ms latency", {"fail_every": None, "delay": 0.8}, False),
    ("2% errors", {"fail_every": 50, "delay": 0.0}, False),
    ("25% errors, --file", {"fail_every": 4, "delay": 0.0}, True),
]

SPEC = """apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: payment-svc
  namespace: production
spec:
  analysis:
    interval: 2s
    threshold: 2
    stepWeights: [20, 50]
    metrics:
    - name: request-success-rate
      thresholdRange: {min: 99}
      interval: 2s
    - name: request-duration
      thresholdRange: {max: 500}
      interval: 2s
  weir:
    rule: canary-split
    destinationService: payment-svc
    minRequests: 10
    fastGuard: {period: 1s, window: 3s}
"""


def upstream(name, fail_every=None, delay=0.0):
    """An HTTP/1.1 keep-alive server on 127.0.0.1:0; every fail_every-th request gets a 500 (a 503 would be retried, as Envoy does)."""
    count = [0]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            with lock:
                count[0] += 1
                n = count[0]
            if delay:
                time.sleep(delay)
            status = 500 if fail_every and n % fail_every == 0 else 200
            body = name.encode()
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.send_header("x-upstream", name)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_weir(weir, work, v1_port, v2_port):
    text = open(os.path.join(ROOT, "config/payment-svc.yaml")).read()
    text = (
        text.replace("http: 18081", f"http: {v1_port}")
        .replace("http: 18082", f"http: {v2_port}")
        .replace("weight: 90 #", "weight: 100 #")
        .replace("weight: 10 #", "weight: 0 #")
    )
    config = os.path.join(work, "payment-svc.yaml")
    open(config, "w").write(text)
    proc = subprocess.Popen(
        [weir, "serve", "--config", config, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline()
        if line.startswith("weir: ready "):
            parts = dict(p.split("=", 1) for p in line.split() if "=" in p)
            # Keep draining its output so that it never blocks on a full pipe.
            threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
            return proc, parts["proxy"], parts["admin"]
        if not line and proc.poll() is not None:
            break
    proc.kill()
    sys.exit("weir serve did not start")


def traffic(proxy, stop, clients=8):
    host, port = proxy.rsplit(":", 1)

    def client():
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        while not stop.is_set():
            try:
                conn.request("GET", "/pay", headers={"host": "payment-svc"})
                conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
            time.sleep(0.005)
        conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    return threads


def run_once(weir, fault, file_mode):
    with tempfile.TemporaryDirectory(prefix="weir-sla-") as work:
        v1 = upstream("v1")
        v2 = upstream("v2", **fault)
        sidecar, proxy, admin = start_weir(weir, work, v1.server_port, v2.server_port)
        stop = threading.Event()
        clients = traffic(proxy, stop)
        try:
            spec = os.path.join(work, "canary.yaml")
            open(spec, "w").write(SPEC)
            report_dir = os.path.join(work, "report")
            extra = ["--file", os.path.join(work, "payment-svc.yaml")] if file_mode else []
            canary = subprocess.run(
                [weir, "canary", "--spec", spec, "--admin", f"http://{admin}", "--report", report_dir]
                + extra,
                capture_output=True,
                text=True,
                timeout=120,
            )
            report = json.load(open(os.path.join(report_dir, "report.json")))
        finally:
            stop.set()
            for t in clients:
                t.join(timeout=5)
            sidecar.terminate()
            sidecar.wait(timeout=30)
            v1.shutdown()
            v2.shutdown()
        rb = report.get("rollback") or {}
        return {
            "exit": canary.returncode,
            "trigger": rb.get("trigger"),
            "gate": rb.get("gate"),
            "to_detected": rb.get("first_failure_to_detected_us"),
            "to_in_force": rb.get("first_failure_to_in_force_us"),
            "detected_to_in_force": rb.get("detected_to_in_force_us"),
            "stable_after": rb.get("stable_seen_after_us"),
        }


def ms(us_values):
    """The median of µs values, in ms."""
    values = [v for v in us_values if v is not None]
    if not values:
        return "n/a"
    median = statistics.median(values) / 1000
    return f"{median:.0f} ms" if median >= 10 else f"{median:.1f} ms"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--weir", default=os.path.join(ROOT, "target/debug/weir"))
    parser.add_argument("--json", help="also write every run's figures here")
    args = parser.parse_args()
    rows, every = [], {}
    for name, fault, file_mode in SCENARIOS:
        runs = []
        for i in range(args.runs):
            r = run_once(args.weir, fault, file_mode)
            print(f"{name} run {i + 1}: {r}", file=sys.stderr)
            runs.append(r)
        every[name] = runs
        rules = sorted({f"{r['trigger']} on {r['gate']}" for r in runs})
        rows.append(
            (
                name,
                ", ".join(rules),
                ms(r["to_detected"] for r in runs),
                ms(r["to_in_force"] for r in runs),
                ms(r["detected_to_in_force"] for r in runs),
                ms(r["stable_after"] for r in runs),
                sum(r["exit"] == 1 for r in runs),
            )
        )
    print(f"medians of {args.runs} runs each (`scripts/canary-sla.py --runs {args.runs}`):\n")
    print("| fault on v2 | rule that fired | first failed request -> detected | -> 0% in force on every replica | detection -> 0% in force | 0% -> first request on v1 | rolled back |")
    print("|---|---|---|---|---|---|---|")
    for name, rule, det, force, d2f, stable, ok in rows:
        print(f"| {name} | {rule} | {det} | {force} | {d2f} | {stable} | {ok}/{args.runs} |")
    if args.json:
        json.dump(every, open(args.json, "w"), indent=2)


if __name__ == "__main__":
    main()
