#!/usr/bin/env python3
"""Tokend in a refresh storm, with many credentials in one process.

N credentials (default 10,000) with 30 s tokens against the built-in emulator:
  1. the first round (every credential's first token): its rate, and /healthz latency
     while it runs (a probe every 10 ms);
  2. SIGUSR1 (every credential due at once) and SIGTERM 0.5 s later: the time to exit,
     and tokend's own count of refreshes finished and left for the next start;
  3. a second start on the same state: every credential ready again, then refreshed
     once more (SIGUSR1), with no refresh token presented twice (the emulator's reuse
     count) and none refused.

Usage: tests/bench/storm.py [--credentials 10000] [--lifetime 30s] [--tokend PATH]
Needs what tests/bench/bench.py needs.
"""
import argparse
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
import json

import bench
from bench import Emulator, config, log, raise_fd_limit, start, wait


class Prober(threading.Thread):
    """GETs a URL every `every` seconds, keeping each answer's latency in ms."""

    def __init__(self, url, every=0.01):
        super().__init__(daemon=True)
        self.url, self.every = url, every
        self.samples, self.failures = [], 0
        self.running = True

    def run(self):
        while self.running:
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    r.read()
                self.samples.append((time.perf_counter() - t) * 1000)
            except OSError:
                self.failures += 1
            time.sleep(self.every)

    def finish(self):
        self.running = False
        self.join()
        s = sorted(self.samples)
        pick = lambda p: s[min(len(s) - 1, int(p * len(s)))] if s else float("nan")
        return {"n": len(s), "p50": pick(0.5), "p99": pick(0.99), "max": s[-1] if s else float("nan"),
                "failures": self.failures}


def health_url(cfg):
    for line in open(cfg):
        if line.startswith("listen = "):
            return f"http://{line.split('=', 1)[1].strip().strip(chr(34))}"
    raise SystemExit("no health listener in the configuration")


def emulator_stats(emu):
    with urllib.request.urlopen(f"http://127.0.0.1:{emu.port}/_emulator/stats") as r:
        return json.load(r)


def outputs(out):
    try:
        return sum(1 for n in os.listdir(out) if not n.startswith("."))
    except FileNotFoundError:
        return 0


def ready(url):
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=5):
            return True
    except OSError:
        return False


def storm(tokend, emulator, n, lifetime):
    work = tempfile.mkdtemp(prefix="tokend-storm-")
    emu = Emulator(emulator, lifetime)
    cfg = config(work, emu, [f"c{i}" for i in range(n)], health=True)
    url = health_url(cfg)
    out = os.path.join(work, "out")
    logf = os.path.join(work, "tokend.log")

    log(f"{n} credentials, {lifetime} tokens: the first round")
    proc = start(tokend, cfg, work)
    wait(lambda: "tokend::daemon: started" in open(logf).read(), 600, "every task started")
    started = time.time()
    probe = Prober(f"{url}/healthz")
    probe.start()
    wait(lambda: outputs(out) >= n, 1200, "the first round", every=0.05)
    first = {"round": time.time() - started}
    first["rate"] = n / first["round"]
    first["healthz"] = probe.finish()

    log("SIGUSR1, then SIGTERM 0.5 s later")
    probe = Prober(f"{url}/healthz")
    probe.start()
    proc.send_signal(signal.SIGUSR1)
    time.sleep(0.5)
    probe_storm = probe.finish()
    t = time.time()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=300)
    stop = {"seconds": time.time() - t, "code": code, "healthz": probe_storm}
    last = [line for line in open(logf) if "credentials stopped" in line]
    stop["line"] = last[-1].strip() if last else "(no line)"
    before = emulator_stats(emu)

    log("started again on the same state; SIGUSR1 once ready: every chain goes on")
    t = time.time()
    proc = start(tokend, cfg, work, name="tokend-2.log")
    wait(lambda: ready(url), 1200, "every credential ready again", every=0.1)
    again = {"ready": time.time() - t}
    proc.send_signal(signal.SIGUSR1)
    wait(lambda: emulator_stats(emu)["refreshes"] - before["refreshes"] >= n, 1200,
         "a refresh of every credential", every=0.1)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=300)
    after = emulator_stats(emu)
    text = open(os.path.join(work, "tokend-2.log")).read() + open(logf).read()
    again["refused"] = text.count("refreshing stopped")
    again["reuses"] = after["reuses"]
    again["refreshes"] = after["refreshes"] - before["refreshes"]
    emu.stop()
    shutil.rmtree(work)
    return first, stop, again


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokend", default=bench.MUSL)
    ap.add_argument("--emulator", help="the tokend whose emulator serves (default: --tokend)")
    ap.add_argument("--credentials", type=int, default=10000)
    ap.add_argument("--lifetime", default="30s")
    args = ap.parse_args()
    if args.tokend == bench.MUSL:
        log("building the static musl release binary")
        subprocess.run(["cargo", "build", "--release", "--locked", "--target", "x86_64-unknown-linux-musl",
                        "--manifest-path", os.path.join(bench.REPO, "Cargo.toml")], check=True)
    raise_fd_limit()
    need = args.credentials + 512
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < need:
        raise SystemExit(f"needs {need} file descriptors")
    first, stop, again = storm(args.tokend, args.emulator or args.tokend, args.credentials, args.lifetime)
    h1, h2 = first["healthz"], stop["healthz"]
    print(f"| figure | {args.credentials:,} credentials, {args.lifetime} tokens |")
    print("|---|---|")
    print(f"| first round | {first['round']:.2f} s ({first['rate']:.0f}/s) |")
    print(f"| /healthz during it (every 10 ms): p50 / p99 / max | {h1['p50']:.1f} / {h1['p99']:.1f} / "
          f"{h1['max']:.1f} ms ({h1['n']} probes, {h1['failures']} failed) |")
    print(f"| /healthz after SIGUSR1 (all due): p50 / p99 / max | {h2['p50']:.1f} / {h2['p99']:.1f} / "
          f"{h2['max']:.1f} ms ({h2['n']} probes, {h2['failures']} failed) |")
    print(f"| SIGTERM 0.5 s after SIGUSR1 to exit | {stop['seconds']:.2f} s (exit {stop['code']}) |")
    print(f"| tokend's last count | `{stop['line'].split('tokend::daemon: ')[-1]}` |")
    print(f"| started again: every credential ready | {again['ready']:.2f} s |")
    print(f"| then refreshed (SIGUSR1) | {again['refreshes']} refreshes |")
    print(f"| reuses at the emulator / credentials refused | {again['reuses']} / {again['refused']} |")
    print(f"\nmachine: {os.cpu_count()} cores, {os.uname().release}, {time.strftime('%Y-%m-%d')}")


if __name__ == "__main__":
    main()
