#!/usr/bin/env python3
"""tokend's footprint and latency, measured against its targets, in one run.

Starts `tokend emulator` on 127.0.0.1 and measures the static musl binary (built if
missing) on this machine: binary size, resident memory, threads and wakeups while idle,
time from exec to the first token on disk (HTTP and HTTPS with a private CA), the time
from the server's answer to the state durable and the outputs visible, 1,000
credentials in one process, and two replicas sharing one chain through a real etcd and
through the Kubernetes API stand-in over it (the leader's and a follower's idle memory
and wakeups; skipped without `etcd`). A naive Python `requests` loop doing the same job runs in
the same invocation as the baseline.

Usage: tests/bench/bench.py [--idle-seconds 60] [--credentials 1000] [--tokend PATH]
       tests/bench/bench.py --scale 1,1000,10000,50000   (memory and speed per credential)
       tests/bench/bench.py --grants 200   (memory and CPU per request of each grant and client_auth)
Needs: cargo with the x86_64-unknown-linux-musl target and musl-tools, openssl, python3.
"""
import argparse
import datetime
import json
import os
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "interop"))
from helpers import read_state  # noqa: E402 (tokend's state file, either format)
MUSL = os.path.join(REPO, "target", "x86_64-unknown-linux-musl", "release", "tokend")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def kib(pid, key):
    return int(proc_status(pid)[key].split()[0])


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def raise_fd_limit():
    # Two files per credential (the state and its lock) and a connection per request in
    # flight: tens of thousands of credentials need more than the usual 1,024, or 20,000.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 262144
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Emulator:
    def __init__(self, tokend, lifetime, tls=None, ca=None, assertion_key=None):
        self.port = free_port()
        args = [tokend, "emulator", "--listen", f"127.0.0.1:{self.port}", "--lifetime", lifetime]
        args += ["--assertion-key", assertion_key] if assertion_key else ["--client-secret", "bench-secret"]
        if tls:
            args += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     preexec_fn=raise_fd_limit)
        self.info = {}
        while len(self.info) < 5:
            key, _, value = self.proc.stdout.readline().strip().partition(" ")
            self.info[key] = value.strip()
        self.scheme = "https" if tls else "http"
        self.context = ssl.create_default_context(cafile=ca) if ca else None

    def bootstrap(self):
        url = f"{self.scheme}://127.0.0.1:{self.port}/_emulator/bootstrap"
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), context=self.context) as r:
            return json.load(r)["refresh_token"]

    def bootstraps(self, n):
        url = f"{self.scheme}://127.0.0.1:{self.port}/_emulator/bootstrap?count={n}"
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), context=self.context) as r:
            return json.load(r)["refresh_tokens"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def config(work, emu, names, health=False, ca=None, client=None):
    """A configuration of `names` against `emu`: refresh-token chains with the client
    secret, or with `client` (lines of the credential's table) the credentials it says."""
    lines = [f'state_dir = "{work}/state"']
    if health:
        lines += ["[health]", f'listen = "127.0.0.1:{free_port()}"']
    tokens = [emu.info["refresh_token"]] if len(names) == 1 else emu.bootstraps(len(names))
    for name, token in zip(names, tokens):
        if client is None:
            boot = os.path.join(work, f"{name}.boot")
            with open(boot, "w") as f:
                f.write(token)
            own = ['client_secret = "bench-secret"', f'refresh_token_file = "{boot}"']
        else:
            own = client
        lines += [
            f"[credentials.{name}]",
            f'token_url = "{emu.info["token_url"]}"',
            'client_id = "tokend-demo"',
            *own,
            f"[credentials.{name}.refresh]",
            'min_remaining = "1s"',
            f"[credentials.{name}.http]",
            "allow_insecure_http = true",
        ]
        if ca:
            lines.append(f'ca_file = "{ca}"')
        lines += [f"[[credentials.{name}.outputs]]", f'path = "{work}/out/{name}"']
    path = os.path.join(work, "tokend.toml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def start(tokend, cfg, work, name="tokend.log"):
    err = open(os.path.join(work, name), "w")
    return subprocess.Popen([tokend, "run", "-c", cfg], stderr=err, preexec_fn=raise_fd_limit,
                            env={k: v for k, v in os.environ.items() if k != "RUST_LOG"})


def rotations(work, name="tokend.log"):
    try:
        return [line for line in open(os.path.join(work, name)) if " rotated " in line]
    except FileNotFoundError:
        return []


def wait(cond, limit, what, every=0.05):
    end = time.time() + limit
    while not cond():
        if time.time() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every)


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def measure_rotating(tokend, health):
    """RSS and threads after 10 rotations at a 2-second lifetime; write latency per rotation."""
    work = tempfile.mkdtemp(prefix="tokend-bench-")
    emu = Emulator(tokend, "2s")
    proc = start(tokend, config(work, emu, ["c"], health=health), work)
    wait(lambda: len(rotations(work)) >= 10, 60, "10 rotations")
    rss, hwm = kib(proc.pid, "VmRSS"), kib(proc.pid, "VmHWM")
    threads = int(proc_status(proc.pid)["Threads"])
    stop(proc)
    emu.stop()
    writes = [int(line.split("state_us=")[1].split()[0]) + int(line.split("publish_us=")[1].split()[0])
              for line in rotations(work)]
    shutil.rmtree(work)
    return rss, hwm, threads, writes


def measure_commit(tokend, n):
    """The crash window. tokend's `state_us` (answer parsed to state durable)
    over `n` rotations driven by SIGUSR1, and, in the same directory and the same loop,
    the disk's own pwrite + fdatasync of a record of the state's size into an existing
    file (the physical limit of a durable commit). One probe sync per rotation, between
    two rotations: a sync's latency depends on how long the disk was idle before it (on
    the CI machine's virtio disk: 0.11 ms back to back, 0.4 ms after 5 ms idle), so the
    two are measured at the same cadence."""
    work = tempfile.mkdtemp(prefix="tokend-bench-", dir=os.environ.get("BENCH_DIR"))
    emu = Emulator(tokend, "1h")
    proc = start(tokend, config(work, emu, ["c"]), work)
    wait(lambda: len(rotations(work)) >= 1, 10, "the first token")
    state_dir = os.path.join(work, "state")
    with open(os.path.join(state_dir, "c.json"), "rb") as f:
        head = f.read(20)
    # The used part of a slot: header and record.
    record = int.from_bytes(head[12:16], "little") + 20 if head[:4] == b"TKS2" else 512
    fd = os.open(os.path.join(state_dir, "disk-probe"), os.O_RDWR | os.O_CREAT, 0o600)
    os.write(fd, b"\0" * 8192)
    os.fsync(fd)
    payload = os.urandom(record)
    disk = []
    for i in range(2, n + 2):
        time.sleep(0.005)
        t0 = time.perf_counter_ns()
        os.pwrite(fd, payload, (i % 2) * 4096)
        os.fdatasync(fd)
        disk.append((time.perf_counter_ns() - t0) // 1000)
        time.sleep(0.005)
        proc.send_signal(signal.SIGUSR1)
        wait(lambda: len(rotations(work)) >= i, 10, f"rotation {i}", every=0.002)
    os.close(fd)
    stop(proc)
    emu.stop()
    lines = rotations(work)[1:]
    state = sorted(int(line.split("state_us=")[1].split()[0]) for line in lines)
    publish = sorted(int(line.split("publish_us=")[1].split()[0]) for line in lines)
    disk.sort()
    shutil.rmtree(work)
    pct = lambda v, p: v[min(len(v) - 1, int(len(v) * p))]
    return {"n": len(state), "record": record, "state_p50": pct(state, 0.5), "state_p95": pct(state, 0.95),
            "publish_p50": pct(publish, 0.5), "disk_p50": pct(disk, 0.5), "disk_p95": pct(disk, 0.95)}


def measure_grants(tokend, requests):
    """One credential per grant and client authentication, `requests` token
    requests driven by SIGUSR1: RSS after them, and CPU per request (the signature of a
    private_key_jwt assertion is made, and its key file read, at every request)."""
    work = tempfile.mkdtemp(prefix="tokend-bench-")
    cc = ['grant = "client_credentials"']
    cases = [("refresh_token, basic", None, None, None),
             ("client_credentials, basic", None, cc + ['client_secret = "bench-secret"'], None)]
    for alg, genpkey in [("ES256", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
                         ("EdDSA", ["-algorithm", "ED25519"]),
                         ("RS256", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])]:
        key = os.path.join(work, f"{alg}.pem")
        subprocess.run(["openssl", "genpkey", *genpkey, "-out", key], check=True, capture_output=True)
        subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-out", key + ".pub"], check=True)
        client = cc + ['client_auth = "private_key_jwt"', f'client_assertion_key_file = "{key}"']
        cases.append((f"client_credentials, private_key_jwt {alg}", key + ".pub", client, alg))
    out = []
    for name, public, client, _ in cases:
        emu = Emulator(tokend, "1h", assertion_key=public)
        case = os.path.join(work, name.replace(" ", "").replace(",", "-"))
        os.makedirs(case)
        proc = start(tokend, config(case, emu, ["c"], client=client), case)
        wait(lambda: len(rotations(case)) >= 1, 10, f"{name}: the first token")
        cpu0 = cpu_seconds(proc.pid)
        for i in range(2, requests + 2):
            proc.send_signal(signal.SIGUSR1)
            wait(lambda: len(rotations(case)) >= i, 10, f"{name}: request {i}", every=0.002)
        cpu = cpu_seconds(proc.pid) - cpu0
        rss, hwm = kib(proc.pid, "VmRSS"), kib(proc.pid, "VmHWM")
        stop(proc)
        emu.stop()
        out.append((name, rss, hwm, cpu * 1000 / requests))
    shutil.rmtree(work)
    return out


def measure_idle(tokend, seconds):
    """Threads and context switches over `seconds` between two refreshes of an hour-long token."""
    work = tempfile.mkdtemp(prefix="tokend-bench-")
    emu = Emulator(tokend, "1h")
    proc = start(tokend, config(work, emu, ["c"], health=True), work)
    wait(lambda: len(rotations(work)) >= 1, 10, "the first token")
    time.sleep(1)
    s0 = proc_status(proc.pid)
    time.sleep(seconds)
    s1 = proc_status(proc.pid)
    stop(proc)
    emu.stop()
    shutil.rmtree(work)
    vol = int(s1["voluntary_ctxt_switches"]) - int(s0["voluntary_ctxt_switches"])
    invol = int(s1["nonvoluntary_ctxt_switches"]) - int(s0["nonvoluntary_ctxt_switches"])
    return int(s1["Threads"]), vol, invol


def make_ca(work):
    ca_key, ca_crt = os.path.join(work, "ca.key"), os.path.join(work, "ca.pem")
    key, csr, crt = (os.path.join(work, n) for n in ("srv.key", "srv.csr", "srv.pem"))
    ext = os.path.join(work, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": True}
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", ca_key, "-out", ca_crt, "-days", "2", "-subj", "/CN=tokend bench CA"], **quiet)
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"], **quiet)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
                    "-out", crt, "-days", "2", "-extfile", ext], **quiet)
    return ca_crt, (crt, key)


def measure_first_token(tokend, tls, runs=7):
    """Milliseconds from exec to the output file on disk (median of `runs`)."""
    times = []
    base = tempfile.mkdtemp(prefix="tokend-bench-")
    ca, identity = make_ca(base) if tls else (None, None)
    emu = Emulator(tokend, "1h", tls=identity, ca=ca)
    for i in range(runs):
        work = os.path.join(base, str(i))
        os.makedirs(work)
        cfg = config(work, emu, ["c"], ca=ca)
        with open(os.path.join(work, "c.boot"), "w") as f:
            f.write(emu.bootstrap())
        out = os.path.join(work, "out", "c")
        t0 = time.perf_counter()
        proc = start(tokend, cfg, work)
        while not os.path.exists(out):
            if proc.poll() is not None:
                raise SystemExit("tokend exited: " + open(os.path.join(work, "tokend.log")).read())
            time.sleep(0.0002)
        times.append((time.perf_counter() - t0) * 1000)
        stop(proc)
    emu.stop()
    shutil.rmtree(base)
    return statistics.median(times)


def measure_many(tokend, n):
    """n credentials in one process: RSS, CPU per 1,000 refreshes, spread of the second round."""
    work = tempfile.mkdtemp(prefix="tokend-bench-")
    lifetime = 30
    emu = Emulator(tokend, f"{lifetime}s")
    names = [f"c{i}" for i in range(n)]
    proc = start(tokend, config(work, emu, names), work)
    state = os.path.join(work, "state")

    def obtained():
        out = []
        for name in names:
            try:
                s = read_state(os.path.join(state, f"{name}.json"))
                out.append(s["obtained_at"])
            except (FileNotFoundError, ValueError, KeyError, TypeError):
                out.append(None)
        return out

    wait(lambda: all(obtained()), 60, "the first round", every=0.5)
    first = obtained()
    cpu0, t0 = cpu_seconds(proc.pid), time.time()
    wait(lambda: all(a != b for a, b in zip(obtained(), first)), 3 * lifetime, "the second round", every=0.5)
    cpu = cpu_seconds(proc.pid) - cpu0
    rss, hwm = kib(proc.pid, "VmRSS"), kib(proc.pid, "VmHWM")
    threads = int(proc_status(proc.pid)["Threads"])
    second = obtained()
    stop(proc)
    emu.stop()

    def epoch(ts):
        return time.mktime(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + float("0" + ts[19:-1])

    firsts = [epoch(t) for t in first]
    seconds = [epoch(t) for t in second]
    shutil.rmtree(work)
    return {
        "rss": rss, "hwm": hwm, "threads": threads,
        "cpu_per_1000": cpu * 1000 / n,
        "first_spread": max(firsts) - min(firsts),
        "second_spread": max(seconds) - min(seconds),
        "second_stdev": statistics.pstdev(seconds),
        "window": 2 * 0.05 * lifetime,
    }


def measure_scale(tokend, emulator, n, spent):
    """n credentials with 1-hour tokens in one process: exec to every task started,
    the first round's rate, RSS once it is over, and SIGTERM to exit. The run's files
    are left in a directory added to `spent`, for the caller to remove once every run
    is over: see `scale_report`."""
    need = n + 512
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < need:
        return {"skipped": f"needs {need} file descriptors; this machine allows "
                           f"{resource.getrlimit(resource.RLIMIT_NOFILE)[1]}"}
    work = tempfile.mkdtemp(prefix="tokend-bench-")
    emu = Emulator(emulator, "1h")
    names = [f"c{i}" for i in range(n)]
    cfg = config(work, emu, names)
    out = os.path.join(work, "out")
    os.sync()  # the bootstrap files just written are not tokend's disk work
    t0 = time.time()
    proc = start(tokend, cfg, work)
    log_path = os.path.join(work, "tokend.log")
    wait(lambda: "tokend::daemon: started" in open(log_path).read(), 600, "every task started", every=0.05)
    started = time.time()
    wait(lambda: os.path.isdir(out) and len(os.listdir(out)) >= n, 1200, "the first round", every=0.1)
    time.sleep(2)
    rss, hwm = kib(proc.pid, "VmRSS"), kib(proc.pid, "VmHWM")
    cpu = cpu_seconds(proc.pid)
    t_stop = time.time()
    stop(proc)
    stopped = time.time() - t_stop
    emu.stop()
    # The round from tokend's own clock: its "started" line to its n-th "rotated" line
    # (polling the directory would add its own period to a round of under a second).
    text = open(log_path).read().splitlines()
    begun = next(log_time(line) for line in text if "tokend::daemon: started" in line)
    ended = max(log_time(line) for line in text if " rotated " in line)
    spent.append(work)
    return {"n": n, "startup": started - t0, "round": ended - begun, "rate": n / max(ended - begun, 1e-9),
            "rss": rss, "hwm": hwm, "cpu": cpu, "stop": stopped}


def log_time(line):
    """The time of a tokend log line (text format: RFC 3339 UTC with microseconds)."""
    stamp = line.split()[0].rstrip("Z")
    return datetime.datetime.fromisoformat(stamp).replace(tzinfo=datetime.timezone.utc).timestamp()


def scale_report(tokend, emulator, counts, repeat=1):
    # Runs interleaved (1, 1,000, 10,000, 1, 1,000, ...): a noisy minute of this shared
    # machine slows one run of each count, not every run of one count.
    #
    # No run's files are deleted before the last run is over. ext4 without a journal
    # (this machine's disk) avoids reusing an inode freed in the last minute (six while
    # its inode-table block is dirty: RECENTCY_MIN and RECENTCY_DIRTY in
    # fs/ext4/ialloc.c), and finds that out, for each new file, by looking up every free
    # inode of the block group in turn. A round that followed the deletion of the run
    # before it paid that scan on its files, up to 1 ms of kernel time per credential,
    # and a short round paid it on all of them. See BENCHMARKS.md, "A first round that depends on the disk".
    runs = {n: [] for n in counts}
    spent = []
    try:
        for i in range(repeat):
            for n in counts:
                log(f"{n} credentials, 1-hour tokens" + (f" (run {i + 1} of {repeat})" if repeat > 1 else ""))
                runs[n].append(measure_scale(tokend, emulator, n, spent))
    finally:
        for work in spent:
            shutil.rmtree(work)
    # Each count's run with the median rate stands for it; the range shows the noise.
    rows = []
    for n in counts:
        measured = sorted((r for r in runs[n] if "skipped" not in r), key=lambda r: r["rate"])
        if not measured:
            rows.append((n, runs[n][0]))
            continue
        median = dict(measured[len(measured) // 2])
        median["rates"] = [r["rate"] for r in measured]
        rows.append((n, median))
    rate_head = "first round (rate)" if repeat == 1 else f"first round (rate), median of {repeat} [range]"
    print(f"| credentials | exec to every task started | {rate_head} | CPU per credential | RSS / VmHWM | per credential above 1 | SIGTERM to exit |")
    print("|---|---|---|---|---|---|---|")
    base = next((r["rss"] for n, r in rows if n == 1 and "rss" in r), None)
    for n, r in rows:
        if "skipped" in r:
            print(f"| {n:,} | skipped: {r['skipped']} | | | | | |")
            continue
        slope = f"{(r['rss'] - base) / (n - 1):.2f} KiB" if base is not None and n > 1 else "-"
        cpu = f"{1000 * r['cpu'] / n:.2f} ms" if n > 1 else "-"
        spread = f" [{r['rates'][0]:.0f}-{r['rates'][-1]:.0f}]" if repeat > 1 else ""
        print(f"| {n:,} | {r['startup']:.2f} s | {r['round']:.2f} s ({r['rate']:.0f}/s){spread} | "
              f"{cpu} | {r['rss'] / 1024:.1f} / {r['hwm'] / 1024:.1f} MiB | {slope} | {r['stop']:.2f} s |")
    measured = [(n, r) for n, r in rows if "rss" in r and n > 1]
    if len(measured) >= 2:
        (n1, r1), (n2, r2) = measured[0], measured[-1]
        print(f"\nslope between {n1:,} and {n2:,} credentials: {(r2['rss'] - r1['rss']) / (n2 - n1):.2f} KiB per credential")
        rates = [r["rate"] for n, r in measured if n >= 1000]
        if len(rates) >= 2:
            print(f"first-round rates from 1,000 credentials up: lowest {min(rates):.0f}/s is "
                  f"{100 * (1 - min(rates) / max(rates)):.0f} % below the highest {max(rates):.0f}/s")
    print(f"\nmachine: {os.cpu_count()} cores, {os.uname().release}, {time.strftime('%Y-%m-%d')}")


BASELINE = r'''
import json, os, sys, time, requests
url, rt_file, out = sys.argv[1], sys.argv[2], sys.argv[3]
while True:
    rt = open(rt_file).read().strip()
    r = requests.post(url, data={"grant_type": "refresh_token", "refresh_token": rt},
                      auth=("tokend-demo", "bench-secret"), timeout=15)
    d = r.json()
    with open(rt_file + ".tmp", "w") as f:
        f.write(d["refresh_token"])
    os.replace(rt_file + ".tmp", rt_file)
    with open(out + ".tmp", "w") as f:
        f.write(d["access_token"])
    os.replace(out + ".tmp", out)
    print("rotated", flush=True)
    time.sleep(d["expires_in"] * 0.75)
'''


def measure_python(seconds):
    """The loop a user would otherwise write: RSS after 10 rotations, threads, idle wakeups."""
    venv = os.path.join(REPO, "tests", "bench", ".venv")
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "requests==2.34.2"],
                       check=True)
    work = tempfile.mkdtemp(prefix="tokend-bench-py-")
    script = os.path.join(work, "loop.py")
    with open(script, "w") as f:
        f.write(BASELINE)
    results = {}
    for lifetime in ("2s", "1h"):
        emu = Emulator(TOKEND, lifetime)
        rt = os.path.join(work, "rt")
        with open(rt, "w") as f:
            f.write(emu.info["refresh_token"])
        logf = os.path.join(work, "py.log")
        proc = subprocess.Popen([py, script, emu.info["token_url"], rt, os.path.join(work, "out")],
                                stdout=open(logf, "w"), stderr=subprocess.STDOUT)
        want = 10 if lifetime == "2s" else 1
        wait(lambda: open(logf).read().count("rotated") >= want, 60, "python rotations")
        if lifetime == "2s":
            results["rss"], results["hwm"] = kib(proc.pid, "VmRSS"), kib(proc.pid, "VmHWM")
        else:
            time.sleep(1)
            s0 = proc_status(proc.pid)
            time.sleep(seconds)
            s1 = proc_status(proc.pid)
            results["threads"] = int(s1["Threads"])
            results["wakeups"] = int(s1["voluntary_ctxt_switches"]) - int(s0["voluntary_ctxt_switches"])
        proc.kill()
        proc.wait()
        emu.stop()
    shutil.rmtree(work)
    return results


def measure_coordinated(tokend, seconds, backend, lease=15):
    """Two replicas sharing one chain through a real etcd, or through the
    Kubernetes API stand-in over it: the leader's and a follower's RSS and
    wakeups while idle. None when etcd is not installed."""
    if not shutil.which("etcd"):
        return None
    work = tempfile.mkdtemp(prefix="tokend-bench-")
    client, peer = free_port(), free_port()
    etcd = subprocess.Popen(
        ["etcd", "--data-dir", f"{work}/etcd", "--listen-client-urls", f"http://127.0.0.1:{client}",
         "--advertise-client-urls", f"http://127.0.0.1:{client}", "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait(lambda: _healthy(f"http://127.0.0.1:{client}/health"), 30, "etcd")
    standin = None
    if backend == "etcd":
        table = f'backend = "etcd"\n[coordination.etcd]\nendpoints = ["http://127.0.0.1:{client}"]\n'
    else:
        api = free_port()
        with open(f"{work}/token", "w") as f:
            f.write("bench-token\n")
        standin = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "tests/coordination/standin/standin.py"), "--etcd",
             f"http://127.0.0.1:{client}", "--port", str(api), "--tokens", f"{work}/token"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait(lambda: _answers(f"http://127.0.0.1:{api}/_standin/stats"), 300, "the Kubernetes API stand-in")
        table = (f'backend = "kubernetes"\n[coordination.kubernetes]\nserver = "http://127.0.0.1:{api}"\n'
                 f'namespace = "bench"\ntoken_file = "{work}/token"\n')
    emu = Emulator(tokend, "1h")
    procs, ports = [], []
    for i in range(2):
        rwork = os.path.join(work, f"r{i}")
        os.makedirs(rwork)
        cfg = config(rwork, emu, ["c"], health=True)
        port = int(open(cfg).read().split('listen = "127.0.0.1:')[1].split('"')[0])
        with open(cfg, "a") as f:
            f.write(f'[coordination]\nidentity = "r{i}"\nlease = "{lease}s"\n{table}')
        # The default token request timeout (15 s) needs a longer lease; 10 s fits 15 s.
        text = open(cfg).read().replace("allow_insecure_http = true", 'allow_insecure_http = true\ntimeout = "10s"')
        open(cfg, "w").write(text)
        procs.append(start(tokend, cfg, rwork))
        ports.append(port)
    wait(lambda: all(os.path.exists(os.path.join(work, f"r{i}", "out", "c")) for i in range(2)), 20,
         "both replicas' tokens")
    time.sleep(2)
    before = [proc_status(p.pid) for p in procs]
    time.sleep(seconds)
    after = [proc_status(p.pid) for p in procs]
    roles = []
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
            roles.append("leader" if 'tokend_leader{credential="c"} 1' in r.read().decode() else "follower")
    out = {}
    for role, p, s0, s1 in zip(roles, procs, before, after):
        out[role] = {
            "rss": int(s1["VmRSS"].split()[0]),
            "hwm": int(s1["VmHWM"].split()[0]),
            "vol": int(s1["voluntary_ctxt_switches"]) - int(s0["voluntary_ctxt_switches"]),
            "invol": int(s1["nonvoluntary_ctxt_switches"]) - int(s0["nonvoluntary_ctxt_switches"]),
        }
    for p in procs:
        stop(p)
    emu.stop()
    if standin:
        standin.terminate()
        standin.wait()
    etcd.terminate()
    etcd.wait()
    shutil.rmtree(work)
    out["renewals"] = seconds // (lease // 3)
    out["re_reads"] = seconds // 30
    return out


def _answers(url):
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def _healthy(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return b"true" in r.read()
    except OSError:
        return False


def main():
    global TOKEND
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokend", default=MUSL)
    ap.add_argument("--idle-seconds", type=int, default=60)
    ap.add_argument("--credentials", type=int, default=1000)
    ap.add_argument("--rotations", type=int, default=300)
    ap.add_argument("--scale", help="only this: credentials per process, e.g. 1,1000,10000,50000")
    ap.add_argument("--repeat", type=int, default=1, help="--scale: runs per count (the median rate stands)")
    ap.add_argument("--emulator", help="the tokend whose emulator serves --scale (default: --tokend)")
    ap.add_argument("--grants", type=int, metavar="N",
                    help="only this: RSS and CPU per request of each grant and client_auth, over N requests")
    args = ap.parse_args()
    TOKEND = args.tokend
    if TOKEND == MUSL:
        log("building the static musl release binary")
        subprocess.run(["cargo", "build", "--release", "--locked", "--target", "x86_64-unknown-linux-musl",
                        "--manifest-path", os.path.join(REPO, "Cargo.toml")], check=True)

    if args.scale:
        raise_fd_limit()  # for this process too: the limit it checks is the one tokend gets
        return scale_report(TOKEND, args.emulator or TOKEND, [int(n) for n in args.scale.split(",")],
                            args.repeat)
    size = os.path.getsize(TOKEND)
    if args.grants:
        print(f"binary: {size:,} bytes")
        print("| credential | RSS (VmRSS / VmHWM) | CPU per request |")
        print("|---|---|---|")
        for name, rss, hwm, cpu_ms in measure_grants(TOKEND, args.grants):
            print(f"| {name} | {rss / 1024:.1f} / {hwm / 1024:.1f} MiB | {cpu_ms:.2f} ms |")
        return
    log("one credential, 10 rotations, without and with the health server")
    rss, hwm, threads, writes = measure_rotating(TOKEND, health=False)
    rss_h, hwm_h, _, _ = measure_rotating(TOKEND, health=True)
    log(f"idle for {args.idle_seconds}s between two refreshes")
    idle_threads, vol, invol = measure_idle(TOKEND, args.idle_seconds)
    log("exec to first token on disk, HTTP and HTTPS")
    first_http = measure_first_token(TOKEND, tls=False)
    first_tls = measure_first_token(TOKEND, tls=True)
    log(f"{args.rotations} rotations, each beside one sync of the disk's own: the crash window")
    commit = measure_commit(TOKEND, args.rotations)
    log(f"{args.credentials} credentials in one process")
    many = measure_many(TOKEND, args.credentials)
    co = {}
    for backend in ("etcd", "kubernetes"):
        log(f"two replicas on one chain through {backend}, idle {args.idle_seconds}s")
        co[backend] = measure_coordinated(TOKEND, args.idle_seconds, backend)
    log(f"the Python requests baseline (idle {args.idle_seconds}s)")
    py = measure_python(args.idle_seconds)

    mib = lambda k: f"{k / 1024:.1f} MiB"
    writes.sort()
    # Each row: figure, tokend's value, target, the Python loop's, and whether the target
    # is met (None: no target). A missed target is printed as missed; CI does not fail on
    # figures, which this shared machine makes noisy.
    rows = [
        ("stripped static binary", f"{size / 1e6:.2f} MB", "<= 8 MB", "-", size / 1e6 <= 8),
        ("RSS after 10 rotations (VmRSS / VmHWM)", f"{mib(rss)} / {mib(hwm)}", "<= 4 MiB",
         f"{mib(py['rss'])} / {mib(py['hwm'])}", rss <= 4 * 1024),
        ("  same, with the health server", f"{mib(rss_h)} / {mib(hwm_h)}", "<= 4 MiB", "-",
         rss_h <= 4 * 1024),
        ("OS threads while idle", str(idle_threads), "<= 2", str(py["threads"]), idle_threads <= 2),
        (f"wakeups while idle ({args.idle_seconds}s, voluntary / involuntary)", f"{vol} / {invol}",
         "scheduled work only", str(py["wakeups"]), None),
        ("exec to first token on disk, HTTP (median of 7)", f"{first_http:.1f} ms", "<= 20 ms", "-",
         first_http <= 20),
        ("exec to first token on disk, HTTPS + ca_file", f"{first_tls:.1f} ms", "-", "-", None),
        ("answer to state durable + outputs visible (median / max)",
         f"{writes[len(writes) // 2] / 1000:.2f} / {writes[-1] / 1000:.2f} ms", "-", "-", None),
        (f"disk: pwrite + fdatasync of {commit['record']} bytes (median / p95, {commit['n']} runs)",
         f"{commit['disk_p50'] / 1000:.3f} / {commit['disk_p95'] / 1000:.3f} ms", "-", "-", None),
        (f"state_us: answer parsed to state durable (median / p95, {commit['n']} rotations)",
         f"{commit['state_p50'] / 1000:.3f} / {commit['state_p95'] / 1000:.3f} ms",
         f"<= 2x disk ({2 * commit['disk_p50'] / 1000:.3f} ms)", "-",
         commit['state_p50'] <= 2 * commit['disk_p50']),
        ("publish_us: state durable to outputs visible (median)", f"{commit['publish_p50'] / 1000:.3f} ms",
         "-", "-", None),
        (f"{args.credentials} credentials: RSS (VmRSS / VmHWM)", f"{mib(many['rss'])} / {mib(many['hwm'])}",
         "<= 24 MiB", "-", many['rss'] <= 24 * 1024),
        (f"{args.credentials} credentials: threads", str(many["threads"]), "1 + <= 16 for disk writes", "-",
         many["threads"] <= 17),
        ("CPU per 1,000 refreshes (plain HTTP)", f"{many['cpu_per_1000']:.2f} s", "< 1 s", "-",
         many['cpu_per_1000'] < 1),
        ("first round (all issued at once): spread", f"{many['first_spread']:.2f} s", "-", "-", None),
        ("second round: spread / stdev (jitter window)",
         f"{many['second_spread']:.2f} s / {many['second_stdev']:.2f} s ({many['window']:.1f} s)",
         "spread over the window", "-", None),
    ]
    for backend, c in co.items():
        if not c:
            rows.append((f"{backend}-coordinated replicas", "skipped: no etcd", "-", "-", None))
            continue
        for role in ("leader", "follower"):
            r = c[role]
            follower = role == "follower"
            rows.append((f"{backend}-coordinated {role}, idle: RSS (VmRSS / VmHWM)",
                         f"{mib(r['rss'])} / {mib(r['hwm'])}", "<= 5 MiB" if follower else "-", "-",
                         r['rss'] <= 5 * 1024 if follower else None))
            rows.append((f"{backend}-coordinated {role}, idle: wakeups (vol / invol)",
                         f"{r['vol']} / {r['invol']}",
                         f"lease renewals ({c['renewals']}) and re-reads ({c['re_reads']}) only", "-", None))
    verdict = lambda met: "-" if met is None else ("met" if met else "MISSED")
    table = [(f, t, target, p, verdict(met)) for f, t, target, p, met in rows]
    header = ("figure", "tokend", "target", "python requests loop", "target met")
    width = [max(len(r[i]) for r in table + [header]) for i in range(5)]
    fmt = "| " + " | ".join(f"{{:<{w}}}" for w in width) + " |"
    print(fmt.format(*header))
    print("|" + "|".join("-" * (w + 2) for w in width) + "|")
    for r in table:
        print(fmt.format(*r))
    missed = [r[0].strip() for r in rows if r[4] is False]
    met = sum(1 for r in rows if r[4] is True)
    print(f"\ntargets: {met} met, {len(missed)} missed" + (f": {'; '.join(missed)}" if missed else ""))
    print(f"machine: {os.cpu_count()} cores, {os.uname().release}, {time.strftime('%Y-%m-%d')}")

if __name__ == "__main__":
    main()
