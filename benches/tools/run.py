#!/usr/bin/env python3
"""Side-by-side benchmark of Watchtower and its peers; run by `benches/peers.sh`.

Starts, on 127.0.0.1 with ports chosen free at run time, a backend (nginx, one worker, core 1),
a TCP sink/source (wtbench serve, core 1), Watchtower and each peer (each pinned to core 0),
then runs every scenario RUNS times, interleaved (run 1 of every proxy, then run 2, ...) so that
machine noise hits every proxy alike. The load generators (wrk, wtbench) run on core 1. The
proxy's CPU time comes from /proc/PID/stat (utime+stime of its whole process tree) before and
after each run. Raw numbers go to results/latest.json; report.py turns them into the tables and
the chart. Only the standard library is used.

Environment (set by peers.sh): WORK (temp dir), WT_BIN, WTBENCH, REPO, RESULTS, DURATION, RUNS,
PROXY_CPUS, LOAD_CPUS, WT_WORKERS,
ONLY, SCENARIOS, CONC, SKIPPED_JSON, STARTUP_RUNS, IDLE_TUNNELS.
"""

import json
import os
import random
import shutil
import signal
import selectors
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402

WORK = os.environ["WORK"]
WT_BIN = os.environ["WT_BIN"]
WTBENCH = os.environ["WTBENCH"]
REPO = os.environ["REPO"]
RESULTS = os.environ["RESULTS"]
DURATION = float(os.environ.get("DURATION", "10"))
RUNS = int(os.environ.get("RUNS", "3"))
CONC = int(os.environ.get("CONC", "50"))
STARTUP_RUNS = int(os.environ.get("STARTUP_RUNS", "10"))
IDLE_TUNNELS = int(os.environ.get("IDLE_TUNNELS", "1000"))
ONLY = [s.strip().lower() for s in os.environ.get("ONLY", "").split(",") if s.strip()]
ONLY = ["mitmproxy" if s == "mitmdump" else s for s in ONLY]
SCEN_FILTER = [s.strip() for s in os.environ.get("SCENARIOS", "").split(",") if s.strip()]
# Cores for the proxies and for the load side (taskset lists). The scaling runs in BENCHMARKS.md
# give both sides both cores: PROXY_CPUS=0,1 LOAD_CPUS=0,1.
PROXY_CPU = os.environ.get("PROXY_CPUS", "0")
LOAD_CPU = os.environ.get("LOAD_CPUS", "1")
# Watchtower's event loops; 1 like every peer's one worker, unless a scaling run asks for more.
WT_WORKERS = int(os.environ.get("WT_WORKERS", "1"))
CLK = os.sysconf("SC_CLK_TCK")
PAUSE = 0.5  # seconds between two runs (sockets settle, TIME_WAITs age)

PIDFILE = os.path.join(WORK, "pids")
_procs = []  # every process started here: (name, Popen)


def log(msg=""):
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------
# processes


def spawn(name, argv, cpu=None, cwd=None, stdin=subprocess.DEVNULL, stdout=None):
    """Starts argv in its own process group, pinned to `cpu`; output to WORK/logs/NAME.log."""
    if cpu is not None:
        argv = ["taskset", "-c", cpu] + list(argv)
    logf = open(os.path.join(WORK, "logs", name + ".log"), "ab")
    p = subprocess.Popen(
        argv, cwd=cwd or WORK, stdin=stdin, stdout=stdout or logf, stderr=logf, start_new_session=True
    )
    _procs.append((name, p))
    with open(PIDFILE, "a") as f:
        f.write(f"{p.pid}\n")
    return p


def stop(p, grace=3.0):
    if p.poll() is None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
    # the group may outlive its leader (e.g. an nginx worker)
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all():
    for _, p in reversed(_procs):
        stop(p, grace=2.0)


def log_tail(name, n=6):
    try:
        with open(os.path.join(WORK, "logs", name + ".log"), "rb") as f:
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
        return " | ".join(lines[-n:])[-600:]
    except OSError:
        return ""


def run_client(name, argv, timeout, env=None, stdin=subprocess.DEVNULL):
    """Runs a load generator on the load core with a hard deadline; returns (rc, stdout)."""
    p = subprocess.Popen(
        ["taskset", "-c", LOAD_CPU] + argv,
        cwd=WORK,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    _procs.append((name, p))
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(p, grace=1.0)
        out, _ = p.communicate()
        return None, (out or b"").decode("utf-8", "replace")
    return p.returncode, out.decode("utf-8", "replace")


# --------------------------------------------------------------------------------------------
# /proc


def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    return s[s.rindex(")") + 2:].split()  # fields from 3 (state) on


def tree(pid):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(_stat(d)[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pid):
    """utime+stime (+ reaped children's) of the whole process tree, in seconds."""
    total = 0
    for p in tree(pid):
        try:
            f = _stat(p)
        except OSError:
            continue
        total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return total / CLK


def memory_kib(pid):
    rss = pss = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            continue
    return rss, pss


# --------------------------------------------------------------------------------------------
# ports


_used_ports = set()


def free_port():
    """A port nobody uses, outside the ephemeral range (which the load runs churn through and
    leave in TIME_WAIT), checked by binding it without SO_REUSEADDR."""
    try:
        lo, hi = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    except OSError:
        lo, hi = 32768, 60999
    ranges = []
    if lo > 12000:
        ranges.append((10000, lo - 1))
    if hi < 64000:
        ranges.append((hi + 1, 65000))
    if not ranges:
        ranges = [(1025, 65000)]
    for _ in range(5000):
        a, b = random.choice(ranges)
        port = random.randint(a, b)
        if port in _used_ports:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        _used_ports.add(port)
        return port
    raise RuntimeError("no free port found")


def accepting(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_ready(p, ports, deadline_s=20.0):
    """Waits until every port accepts; returns None or why not."""
    end = time.time() + deadline_s
    while time.time() < end:
        if p.poll() is not None:
            return f"exited with status {p.returncode}"
        if all(accepting(x) for x in ports):
            return None
        time.sleep(0.05)
    return f"ports {ports} not accepting after {deadline_s:.0f} s"


# --------------------------------------------------------------------------------------------
# the set-up: certificates, files, backend, sink


def sh(argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, timeout=60, **kw)


def make_certs():
    d = os.path.join(WORK, "certs")
    os.makedirs(d, exist_ok=True)
    j = lambda n: os.path.join(d, n)  # noqa: E731
    sh(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", j("ca.key")])
    sh(["openssl", "req", "-x509", "-new", "-key", j("ca.key"), "-subj", "/CN=wtbench local CA",
        "-days", "30", "-sha256", "-out", j("ca.pem"),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    sh(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", j("server.key")])
    sh(["openssl", "req", "-new", "-key", j("server.key"), "-subj", "/CN=localhost", "-out", j("server.csr")])
    with open(j("ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,DNS:bench.test,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    sh(["openssl", "x509", "-req", "-in", j("server.csr"), "-CA", j("ca.pem"), "-CAkey", j("ca.key"),
        "-CAcreateserial", "-days", "30", "-sha256", "-extfile", j("ext.cnf"), "-out", j("server.pem")])
    with open(j("haproxy.pem"), "w") as f:
        f.write(open(j("server.pem")).read() + open(j("server.key")).read())
    # mitmproxy's CA: an ECDSA P-256 one, so that its leaves (which reuse the CA key) have the
    # same key type as Watchtower's, nginx's and HAProxy's. MITM_RSA=1 keeps mitmproxy's own
    # RSA-2048 default instead.
    m = os.path.join(WORK, "mitm")
    os.makedirs(m, exist_ok=True)
    if os.environ.get("MITM_RSA") != "1":
        sh(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", os.path.join(m, "k.pem")])
        sh(["openssl", "req", "-x509", "-new", "-key", os.path.join(m, "k.pem"), "-subj", "/CN=mitmproxy/O=mitmproxy",
            "-days", "30", "-sha256", "-out", os.path.join(m, "c.pem"),
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        with open(os.path.join(m, "mitmproxy-ca.pem"), "w") as f:
            f.write(open(os.path.join(m, "k.pem")).read() + open(os.path.join(m, "c.pem")).read())
        shutil.copy(os.path.join(m, "c.pem"), os.path.join(m, "mitmproxy-ca-cert.pem"))
    for top in (d, m):  # readable by the peers' unprivileged workers (nobody, proxy)
        os.chmod(top, 0o755)
        for x in os.listdir(top):
            os.chmod(os.path.join(top, x), 0o644)
    os.chmod(WORK, 0o755)


NGINX_COMMON = """
worker_processes 1;
daemon off;
master_process on;
worker_rlimit_nofile 65536;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    server_tokens off;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 100000000;
    default_type application/octet-stream;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    ssl_protocols TLSv1.2 TLSv1.3;
{body}
}}
"""


def nginx_conf(name, body):
    d = os.path.join(WORK, name)
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(NGINX_COMMON.format(dir=d, body=body))
    return path, d


class Env:
    pass


E = Env()


def start_backend():
    www = os.path.join(WORK, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "small"), "wb") as f:
        f.write(b"x" * 99 + b"\n")  # 100 bytes
    with open(os.path.join(www, "large"), "wb") as f:
        f.write(os.urandom(1 << 20) * 10)  # 10 MiB
    for x in ("small", "large"):
        os.chmod(os.path.join(www, x), 0o644)
    os.chmod(www, 0o755)
    E.bport, E.btls = free_port(), free_port()
    c = os.path.join(WORK, "certs")
    conf, d = nginx_conf("backend", f"""
    server {{
        listen 127.0.0.1:{E.bport};
        listen 127.0.0.1:{E.btls} ssl;
        ssl_certificate {c}/server.pem;
        ssl_certificate_key {c}/server.key;
        root {www};
        location / {{ }}
    }}""")
    p = spawn("backend-nginx", ["nginx", "-c", conf, "-p", d, "-e", os.path.join(d, "error.log")], cpu=LOAD_CPU)
    why = wait_ready(p, [E.bport, E.btls])
    if why:
        raise SystemExit(f"backend nginx did not start: {why}: {log_tail('backend-nginx')}")
    E.backend = p

    pf = os.path.join(WORK, "sink.port")
    p = spawn("sink", [WTBENCH, "serve", "--port-file", pf], cpu=LOAD_CPU)
    end = time.time() + 10
    while not os.path.exists(pf) and time.time() < end and p.poll() is None:
        time.sleep(0.02)
    if not os.path.exists(pf):
        raise SystemExit(f"TCP sink did not start: {log_tail('sink')}")
    E.sink = int(open(pf).read())
    E.sink_proc = p


# --------------------------------------------------------------------------------------------
# proxies


class Proxy:
    def __init__(self, name, kind):
        self.name = name
        self.kind = kind
        self.ports = {}  # rev_http, rev_https, fwd
        self.proc = None
        self.argv = None
        self.ca = None
        self.error = None  # why it stopped working, once it did
        self.main_port = None
        self.notes = []

    def alive(self):
        if self.proc is None:
            return False
        if self.proc.poll() is not None:
            if not self.error:
                rc = self.proc.returncode
                how = f"killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"
                self.error = f"{how}; log: {log_tail(self.name)}"
            return False
        return True


def conf_watchtower(px):
    d = os.path.join(WORK, "watchtower")
    os.makedirs(d, exist_ok=True)
    px.ports = {"fwd": free_port(), "rev_http": free_port(), "rev_https": free_port()}
    base = f"""[proxy]
listen = "127.0.0.1"
proxy_port = {px.ports['fwd']}
reverse_http_port = {px.ports['rev_http']}
reverse_https_port = {px.ports['rev_https']}
local_routing = true
{{workers}}
[tls]
ca_cert = "ca.pem"
ca_key = "ca-key.pem"

[timeouts]
idle = 120

[admin]
port = {free_port()}

[[route]]
id = "bench"
domain = "bench.test"
target_host = "127.0.0.1"
target_port = {E.bport}
enabled = true
"""
    path = os.path.join(d, "watchtower.toml")
    with open(path, "w") as f:
        f.write(base.replace("{workers}", f"workers = {WT_WORKERS}"))
    px.notes.append(f"workers = {WT_WORKERS}")
    r = subprocess.run([WT_BIN, "ca", "path", "--config", path], capture_output=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("watchtower ca path failed: " + r.stderr.decode()[-300:])
    px.ca = os.path.join(d, "ca.pem")
    px.argv = [WT_BIN, "--config", path, "--quiet"]
    px.main_port = px.ports["fwd"]


def conf_nginx(px):
    px.ports = {"rev_http": free_port(), "rev_https": free_port()}
    c = os.path.join(WORK, "certs")
    loc = """
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_max_temp_file_size 0;  # stream large bodies, never spool them to disk
        }"""
    conf, d = nginx_conf("nginx", f"""
    upstream backend {{
        server 127.0.0.1:{E.bport};
        keepalive 256;
        keepalive_requests 100000000;
        keepalive_timeout 120s;
    }}
    server {{
        listen 127.0.0.1:{px.ports['rev_http']};{loc}
    }}
    server {{
        listen 127.0.0.1:{px.ports['rev_https']} ssl;
        ssl_certificate {c}/server.pem;
        ssl_certificate_key {c}/server.key;{loc}
    }}""")
    px.argv = ["nginx", "-c", conf, "-p", d, "-e", os.path.join(d, "error.log")]
    px.ca = os.path.join(c, "ca.pem")
    px.main_port = px.ports["rev_http"]


def conf_haproxy(px):
    px.ports = {"rev_http": free_port(), "rev_https": free_port()}
    c = os.path.join(WORK, "certs")
    d = os.path.join(WORK, "haproxy")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(f"""global
    nbthread 1
    maxconn 8000
    ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
    mode http
    timeout connect 10s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
    timeout http-request 15s
    option http-keep-alive

frontend rev_http
    bind 127.0.0.1:{px.ports['rev_http']}
    http-request set-header X-Forwarded-Proto http
    default_backend be

frontend rev_https
    bind 127.0.0.1:{px.ports['rev_https']} ssl crt {c}/haproxy.pem alpn http/1.1
    http-request set-header X-Forwarded-Proto https
    default_backend be

backend be
    option forwardfor
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-reuse safe
    server s1 127.0.0.1:{E.bport}
""")
    px.argv = ["haproxy", "-f", path, "-db"]
    px.ca = os.path.join(c, "ca.pem")
    px.main_port = px.ports["rev_http"]


def conf_tinyproxy(px):
    px.ports = {"fwd": free_port()}
    d = os.path.join(WORK, "tinyproxy")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "tinyproxy.conf")
    with open(path, "w") as f:
        f.write(f"""User nobody
Group nogroup
Port {px.ports['fwd']}
Listen 127.0.0.1
Timeout 600
LogLevel Critical
MaxClients 4096
Allow 127.0.0.1
""")
    px.argv = ["tinyproxy", "-d", "-c", path]
    px.main_port = px.ports["fwd"]


def conf_squid(px):
    px.ports = {"fwd": free_port()}
    d = os.path.join(WORK, "squid")
    os.makedirs(d, exist_ok=True)
    try:
        shutil.chown(d, user="proxy")
    except (LookupError, PermissionError, OSError):
        pass
    path = os.path.join(d, "squid.conf")
    user = "cache_effective_user proxy\n" if os.geteuid() == 0 else ""
    with open(path, "w") as f:
        f.write(f"""http_port 127.0.0.1:{px.ports['fwd']}
workers 1
{user}pid_filename none
cache_log {d}/cache.log
access_log none
cache_store_log none
logfile_rotate 0
coredump_dir {d}
cache deny all
cache_mem 8 MB
netdb_filename none
icp_port 0
htcp_port 0
acl localnet src 127.0.0.1/32
http_access allow localnet
http_access deny all
client_persistent_connections on
server_persistent_connections on
pconn_timeout 2 minutes
client_idle_pconn_timeout 2 minutes
half_closed_clients off
shutdown_lifetime 0 seconds
max_filedescriptors 65536
dns_nameservers 127.0.0.1
""")
    px.argv = ["squid", "-N", "-f", path]
    px.main_port = px.ports["fwd"]


def conf_privoxy(px):
    px.ports = {"fwd": free_port()}
    d = os.path.join(WORK, "privoxy")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "bench.action"), "w") as f:
        f.write("{ +limit-connect{-} }\n/\n")  # CONNECT to any port
    path = os.path.join(d, "config")
    templ = "/etc/privoxy/templates"
    with open(path, "w") as f:
        f.write(f"""confdir {d}
{('templdir ' + templ) if os.path.isdir(templ) else ''}
actionsfile bench.action
listen-address 127.0.0.1:{px.ports['fwd']}
toggle 1
enable-remote-toggle 0
enable-remote-http-toggle 0
enable-edit-actions 0
buffer-limit 4096
keep-alive-timeout 300
default-server-timeout 60
socket-timeout 300
connection-sharing 1
max-client-connections 4096
tolerate-pipelining 1
""")
    px.argv = ["privoxy", "--no-daemon", path]
    px.main_port = px.ports["fwd"]


def conf_mitmproxy(px):
    px.ports = {"fwd": free_port()}
    m = os.path.join(WORK, "mitm")
    os.makedirs(m, exist_ok=True)
    addon = os.path.join(m, "route.py")
    with open(addon, "w") as f:
        f.write(f"""# bench.test -> the plain-HTTP backend, like Watchtower's route
def request(flow):
    if flow.request.pretty_host == "bench.test":
        flow.request.scheme = "http"
        flow.request.host = "127.0.0.1"
        flow.request.port = {E.bport}
""")
    px.argv = ["mitmdump", "--listen-host", "127.0.0.1", "--listen-port", str(px.ports["fwd"]),
               "--set", f"confdir={m}", "--set", "connection_strategy=lazy", "--set", "upstream_cert=false",
               "--set", "http2=false", "--set", "flow_detail=0", "--set", "termlog_verbosity=error",
               # blind tunnels to the sink (mitmproxy 8 matches the host without the port)
               "--ignore-hosts", r"^127\.0\.0\.1$", "-s", addon, "-q"]
    px.ca = os.path.join(m, "mitmproxy-ca-cert.pem")
    px.main_port = px.ports["fwd"]


PEERS = [
    # name, kind (reverse | forward | mitm | watchtower), configure, executable, Debian package
    ("watchtower", "watchtower", conf_watchtower, None, None),
    ("nginx", "reverse", conf_nginx, "nginx", "nginx-light"),
    ("haproxy", "reverse", conf_haproxy, "haproxy", "haproxy"),
    ("tinyproxy", "forward", conf_tinyproxy, "tinyproxy", "tinyproxy"),
    ("squid", "forward", conf_squid, "squid", "squid"),
    ("privoxy", "forward", conf_privoxy, "privoxy", "privoxy"),
    ("mitmproxy", "mitm", conf_mitmproxy, "mitmdump", "mitmproxy"),
]


def start_proxies(skipped):
    proxies = {}
    for name, kind, conf, exe, pkg in PEERS:
        if ONLY and name not in ONLY:
            continue
        if name in skipped:
            continue
        if exe and not shutil.which(exe):
            skipped[name] = f"`{exe}` not installed (apt-get install {pkg} failed or was not possible)"
            continue
        px = Proxy(name, kind)
        try:
            conf(px)
        except Exception as e:  # noqa: BLE001
            skipped[name] = f"configuration failed: {e}"
            continue
        px.proc = spawn(name, px.argv, cpu=PROXY_CPU)
        why = wait_ready(px.proc, sorted(px.ports.values()), deadline_s=30.0)
        if why:
            skipped[name] = f"did not start: {why}; log: {log_tail(name)}"
            stop(px.proc)
            continue
        if name == "mitmproxy":
            # the CA exists once it listens
            end = time.time() + 10
            while not os.path.exists(px.ca) and time.time() < end:
                time.sleep(0.05)
            if os.environ.get("MITM_RSA") == "1":
                px.notes.append("its default RSA-2048 CA")
            else:
                px.notes.append("ECDSA P-256 CA")
        proxies[name] = px
        log(f"  started {name:<10} pid {px.proc.pid:<7} ports {px.ports}")
    return proxies


# --------------------------------------------------------------------------------------------
# sanity probes: one request through every path before measuring


def http_get(port, request, timeout=5.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data.split(b"\r\n", 1)[0].decode("latin-1")


def probes(proxies):
    problems = {}
    small = f"GET /small HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    absreq = (f"GET http://127.0.0.1:{E.bport}/small HTTP/1.1\r\nHost: 127.0.0.1:{E.bport}\r\n"
              "Connection: close\r\n\r\n").encode()
    for px in proxies.values():
        try:
            if "rev_http" in px.ports:
                line = http_get(px.ports["rev_http"], small)
                if " 200 " not in line + " ":
                    problems.setdefault(px.name, []).append(f"reverse GET /small: {line!r}")
            if "fwd" in px.ports and px.kind in ("watchtower", "forward"):
                line = http_get(px.ports["fwd"], absreq)
                if " 200 " not in line + " ":
                    problems.setdefault(px.name, []).append(f"forward GET: {line!r}")
        except OSError as e:
            problems.setdefault(px.name, []).append(f"probe failed: {e}")
    return problems


# --------------------------------------------------------------------------------------------
# scenarios

WRK_LUA = """
local abs = os.getenv("WRK_ABS_URL")
local host = os.getenv("WRK_HOST")
if abs and abs ~= "" then wrk.path = abs end
if host and host ~= "" then wrk.headers["Host"] = host end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p99_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50),
    latency:percentile(99), e.connect, e.read, e.write, e.status, e.timeout))
end
"""

SCENARIOS = [
    dict(id="rev_http_small", short="Reverse HTTP, 100 B", title="Reverse HTTP, 100-byte responses",
         how=f"wrk -t1 -c{CONC}, keep-alive, GET /small on the proxy's reverse port (Watchtower: reverse_http, "
             "Host 127.0.0.1 -> its first route); the proxy keeps its connections to the backend alive",
         unit="req/s", cpu_unit="µs/req", cpu_scale=1e6, kinds=("watchtower", "reverse")),
    dict(id="rev_http_large", short="Reverse HTTP, 10 MiB", title="Reverse HTTP, 10 MiB responses (opt-in)",
         how="wrk -t1 -c8, keep-alive, GET /large (10 MiB) on the reverse port; GB = 10^9 bytes of responses. "
             "Not in the default set: SCENARIOS=rev_http_large (or a list including it) runs it",
         unit="GB/s", cpu_unit="ms/GB", cpu_scale=1e3, kinds=("watchtower", "reverse"), default=False),
    dict(id="fwd_http", short="Forward HTTP, absolute-form", title="Forward HTTP, absolute-form, 100-byte responses",
         how=f"wrk -t1 -c{CONC} connected to the proxy, sending GET http://127.0.0.1:BACKEND/small (pass-through, "
             "no route); direct = the same requests straight to the backend",
         unit="req/s", cpu_unit="µs/req", cpu_scale=1e6, kinds=("watchtower", "forward")),
    dict(id="connect_bulk_up", short="CONNECT bulk, upload", title="CONNECT tunnel bulk, client -> server",
         how="one tunnel to the TCP sink, 256 KiB writes for the whole run (GB = 10^9 bytes)",
         unit="GB/s", cpu_unit="ms/GB", cpu_scale=1e3, kinds=("watchtower", "forward", "mitm")),
    dict(id="connect_bulk_down", short="CONNECT bulk, download", title="CONNECT tunnel bulk, server -> client",
         how="one tunnel from the TCP source, 256 KiB reads for the whole run (GB = 10^9 bytes)",
         unit="GB/s", cpu_unit="ms/GB", cpu_scale=1e3, kinds=("watchtower", "forward", "mitm")),
    dict(id="connect_short", short="Short CONNECT tunnels", title="Short CONNECT tunnels",
         how=f"wtbench short, {CONC} threads, each in a loop: connect, CONNECT to the TCP echo server, "
             "64-byte exchange, close; p50/p99 = the whole tunnel",
         unit="tunnels/s", cpu_unit="µs/tunnel", cpu_scale=1e6, kinds=("watchtower", "forward", "mitm")),
    dict(id="rev_https_ka", short="Reverse HTTPS, keep-alive", title="Reverse HTTPS, keep-alive, 100-byte responses",
         how=f"wtbench tls ({CONC} threads, OpenSSL client, TLS 1.3, certificate verified, SNI localhost) GETs "
             "/small on kept-alive connections; the proxy terminates TLS and speaks plain HTTP to the backend. "
             "Direct = the backend terminating TLS itself, on the load core (not an upper bound)",
         unit="req/s", cpu_unit="µs/req", cpu_scale=1e6, kinds=("watchtower", "reverse")),
    dict(id="rev_https_new", short="Reverse HTTPS, new connections", title="Reverse HTTPS, one new TLS connection per request",
         how=f"wtbench tls --mode new ({CONC} threads): connect, full TLS 1.3 handshake (never resumed, "
             "certificate verified), one GET with Connection: close, close. The OpenSSL 3.0 client costs about "
             "1 ms of the load core per handshake, so the rate is bounded by the load side: compare the CPU column. "
             "Direct = the backend terminating TLS itself, on the load core",
         unit="handshakes/s", cpu_unit="µs/handshake", cpu_scale=1e6, kinds=("watchtower", "reverse")),
    dict(id="intercept_ka", short="Intercepted CONNECT, keep-alive", title="Intercepted CONNECT to a routed domain, keep-alive inside the tunnel",
         how=f"wtbench tls ({CONC} threads): CONNECT bench.test:443, TLS 1.3 trusting the proxy's own CA, then "
             "GETs on the kept-alive connection; the proxy sends them to the plain-HTTP backend. "
             "Direct = TLS straight to the backend, on the load core",
         unit="req/s", cpu_unit="µs/req", cpu_scale=1e6, kinds=("watchtower", "mitm")),
    dict(id="intercept_new", short="Intercepted CONNECT, new tunnels", title="Intercepted CONNECT, one new tunnel + TLS handshake per request",
         how=f"wtbench tls --mode new ({CONC} threads) through CONNECT bench.test:443: connect, CONNECT, full "
             "handshake, one GET, close. Bounded by the load side like the reverse HTTPS one: compare the CPU column",
         unit="handshakes/s", cpu_unit="µs/handshake", cpu_scale=1e6, kinds=("watchtower", "mitm")),
]


def members(sc, proxies):
    return ["direct"] + [n for n, px in proxies.items() if px.kind in sc["kinds"]]


def parse_json_line(out, prefix=""):
    for line in out.splitlines():
        line = line.strip()
        if prefix:
            if line.startswith(prefix):
                return json.loads(line[len(prefix):])
        elif line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def wrk_run(url, env_extra, dur, conns=None, bulk=False):
    env = dict(os.environ)
    env.update(env_extra)
    rc, out = run_client("wrk", ["wrk", "-t1", f"-c{conns or CONC}", f"-d{dur:g}s", "--timeout", "5s",
                                 "-s", os.path.join(WORK, "report.lua"), url], timeout=dur + 30, env=env)
    j = parse_json_line(out, "WRKJSON ")
    if rc is None:
        return None, "wrk did not finish in time"
    if j is None:
        return None, f"wrk failed (status {rc}): {out.strip()[-300:]}"
    secs = j["duration_us"] / 1e6
    # wrk counts a "read error" each time the server closes a connection that its last response
    # did not announce as closing (tinyproxy does this after every response); those requests were
    # answered, so closes are reported, not counted as failures. Non-2xx/3xx answers, connect
    # errors, write errors and timeouts are failures.
    errors = j["connect"] + j["write"] + j["status"] + j["timeout"]
    res = dict(count=j["requests"], secs=secs, rate=j["requests"] / secs if secs else 0,
               p50_us=j["p50_us"], p99_us=j["p99_us"], errors=errors, info=None,
               error_detail={k: j[k] for k in ("connect", "read", "write", "status", "timeout") if j[k]})
    if j["read"] > 0.01 * max(j["requests"], 1):
        res["info"] = f"server closed the connection {j['read']:,} times (wrk read errors)"
    if bulk:  # throughput in GB/s of response bytes; the work unit is the byte
        res["requests"] = j["requests"]
        res["count"] = j["bytes"]
        res["rate"] = j["bytes"] / secs / 1e9 if secs else 0
        if j["requests"] == 0:
            res["count"] = 0
    return res, None


def tool_run(args, dur):
    rc, out = run_client("wtbench", [WTBENCH] + args, timeout=dur + 45)
    j = parse_json_line(out)
    if rc is None:
        return None, "wtbench did not finish in time"
    if j is None:
        return None, f"wtbench failed (status {rc}): {out.strip()[-300:]}"
    if not j.get("ok"):
        return None, j.get("error", "failed")
    res = dict(count=j["count"], secs=j["secs"], rate=j["rate"], p50_us=j.get("p50_us"),
               p99_us=j.get("p99_us"), errors=j.get("errors", 0), info=j.get("info"),
               first_error=j.get("first_error"))
    return res, None


def client_for(sc, m, proxies):
    """Returns a function running one measurement of scenario `sc` for member `m`."""
    D = DURATION
    sid = sc["id"]
    px = proxies.get(m)
    bench_ca = os.path.join(WORK, "certs", "ca.pem")
    if sid == "rev_http_small":
        port = E.bport if m == "direct" else px.ports["rev_http"]
        return lambda: wrk_run(f"http://127.0.0.1:{port}/small", {}, D)
    if sid == "rev_http_large":
        port = E.bport if m == "direct" else px.ports["rev_http"]
        return lambda: wrk_run(f"http://127.0.0.1:{port}/large", {}, D, conns=8, bulk=True)
    if sid == "fwd_http":
        if m == "direct":
            return lambda: wrk_run(f"http://127.0.0.1:{E.bport}/small", {}, D)
        env = {"WRK_ABS_URL": f"http://127.0.0.1:{E.bport}/small", "WRK_HOST": f"127.0.0.1:{E.bport}"}
        return lambda: wrk_run(f"http://127.0.0.1:{px.ports['fwd']}/", env, D)
    proxy_arg = "-" if m == "direct" else f"127.0.0.1:{px.ports['fwd']}" if px and "fwd" in px.ports else None
    target = f"127.0.0.1:{E.sink}"
    if sid in ("connect_bulk_up", "connect_bulk_down"):
        d = "up" if sid.endswith("up") else "down"
        return lambda: tool_run(["bulk", "--proxy", proxy_arg, "--target", target, "--dir", d,
                                 "--secs", str(D)], D)
    if sid == "connect_short":
        return lambda: tool_run(["short", "--proxy", proxy_arg, "--target", target, "--secs", str(D),
                                 "--conc", str(CONC)], D)
    if sid in ("rev_https_ka", "rev_https_new"):
        # Not wrk: it speaks TLS 1.2 and resumes its session on every reconnection.
        port = E.btls if m == "direct" else px.ports["rev_https"]
        ca = bench_ca if m == "direct" else px.ca
        mode = "ka" if sid == "rev_https_ka" else "new"
        return lambda: tool_run(["tls", "--connect", f"127.0.0.1:{port}", "--sni", "localhost",
                                 "--host", "localhost", "--path", "/small", "--ca", ca, "--secs", str(D),
                                 "--conc", str(CONC), "--mode", mode], D)
    if sid in ("intercept_ka", "intercept_new"):
        mode = "ka" if sid == "intercept_ka" else "new"
        if m == "direct":
            args = ["--connect", f"127.0.0.1:{E.btls}", "--ca", bench_ca]
        else:
            args = ["--connect", f"127.0.0.1:{px.ports['fwd']}", "--tunnel", "bench.test:443", "--ca", px.ca]
        return lambda: tool_run(["tls"] + args + ["--sni", "bench.test", "--host", "bench.test",
                                                  "--path", "/small", "--secs", str(D), "--conc", str(CONC),
                                                  "--mode", mode], D)
    raise KeyError(sid)


def measure(sc, m, proxies):
    px = proxies.get(m)
    if px is not None and not px.alive():
        return dict(ok=False, error=f"proxy not running: {px.error}")
    fn = client_for(sc, m, proxies)
    cpu0 = cpu_seconds(px.proc.pid) if px else None
    t0 = time.time()
    res, err = fn()
    wall = time.time() - t0
    cpu1 = cpu_seconds(px.proc.pid) if px and px.proc.poll() is None else None
    if px is not None and not px.alive():
        return dict(ok=False, error=f"proxy died during the run: {px.error}")
    if res is None:
        return dict(ok=False, error=err)
    res["ok"] = True
    res["wall_s"] = round(wall, 3)
    if res["count"] <= 0:
        res["ok"] = False
        res["error"] = "nothing completed" + (f": {res.get('first_error')}" if res.get("first_error") else "")
    elif res["errors"] > 0.01 * res["count"]:
        res["ok"] = False
        res["error"] = (f"{res['errors']} errors for {res['count']} completed"
                        + (f": {res.get('first_error') or res.get('error_detail')}"))
    if px is not None and cpu1 is not None:
        res["cpu_s"] = round(cpu1 - cpu0, 4)
        units = res["count"] if sc["unit"] != "GB/s" else res["count"] / 1e9
        res["cpu_per_unit"] = (cpu1 - cpu0) * sc["cpu_scale"] / units if units else None
    return res


# --------------------------------------------------------------------------------------------
# memory, start-up, binaries, machine


def idle_tunnels(px):
    rss0, pss0 = memory_kib(px.proc.pid)
    p = subprocess.Popen(["taskset", "-c", LOAD_CPU, WTBENCH, "idle", "--proxy", f"127.0.0.1:{px.ports['fwd']}",
                          "--target", f"127.0.0.1:{E.sink}", "--n", str(IDLE_TUNNELS), "--timeout", "60"],
                         cwd=WORK, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True)
    _procs.append(("idle", p))
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    line = b""
    end = time.time() + 90
    while time.time() < end and b"\n" not in line:
        if sel.select(timeout=1.0):
            chunk = os.read(p.stdout.fileno(), 4096)
            if not chunk:
                break
            line += chunk
    if not line.startswith(b"READY "):
        stop(p)
        return dict(ok=False, error="idle tunnels: " + (line.decode("utf-8", "replace").strip()[-300:] or "no answer"))
    info = json.loads(line[6:].split(b"\n")[0])
    time.sleep(1.0)
    alive = px.alive()
    rss1, pss1 = memory_kib(px.proc.pid) if alive else (0, 0)
    try:
        p.stdin.close()
        p.wait(timeout=30)
    except (subprocess.TimeoutExpired, BrokenPipeError):
        stop(p)
    if not alive:
        return dict(ok=False, error=f"proxy died with idle tunnels open: {px.error}")
    n = info["open"]
    out = dict(ok=n > 0, error=None if n else f"no tunnel opened: {info.get('first_error')}", open=n, errors=info["errors"], rss_before_kib=rss0, rss_with_kib=rss1,
               pss_before_kib=pss0, pss_with_kib=pss1,
               per_tunnel_kib=(rss1 - rss0) / n if n else None,
               per_tunnel_pss_kib=(pss1 - pss0) / n if n else None)
    if n < IDLE_TUNNELS:
        out["note"] = f"only {n} of {IDLE_TUNNELS} opened: {info.get('first_error')}"
    time.sleep(1.0)  # let the proxy close its side
    return out


def startup_time(px):
    rc, out = run_client("startup", [WTBENCH, "startup", "--port", str(px.main_port), "--runs", str(STARTUP_RUNS),
                                     "--cpu", PROXY_CPU, "--timeout", "20",
                                     "--log", os.path.join(WORK, "logs", f"startup-{px.name}.log"), "--"] + px.argv,
                         timeout=STARTUP_RUNS * 25 + 30)
    j = parse_json_line(out)
    if not j or not j.get("ok"):
        return dict(ok=False, error=(j or {}).get("error") or out.strip()[-300:])
    return dict(ok=True, median_ms=j["median_ms"], runs_ms=j["runs_ms"])


def binary_sizes(proxies_all):
    out = {}
    wt = WT_BIN
    stripped = os.path.join(WORK, "watchtower.stripped")
    note = "target/release/watchtower"
    try:
        if shutil.which("strip"):
            sh(["strip", "-o", stripped, wt])
            wt_size = os.path.getsize(stripped)
            note += ", stripped"
        else:
            wt_size = os.path.getsize(wt)
    except (subprocess.CalledProcessError, OSError):
        wt_size = os.path.getsize(wt)
    out["watchtower"] = dict(bytes=wt_size, path=note, release_bytes=os.path.getsize(wt))
    for name, kind, conf, exe, pkg in PEERS:
        if exe is None or (ONLY and name not in ONLY):
            continue
        path = shutil.which(exe)
        if not path:
            continue
        path = os.path.realpath(path)
        inst = None
        try:
            r = subprocess.run(["dpkg-query", "-W", "-f=${Installed-Size}", pkg], capture_output=True, timeout=10)
            inst = int(r.stdout.decode().strip()) if r.returncode == 0 else None
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        entry = dict(bytes=os.path.getsize(path), path=path, package=pkg, package_installed_kib=inst)
        with open(path, "rb") as f:
            if f.read(2) == b"#!":
                entry["note"] = "a Python launcher script; the code is the installed package"
        out[name] = entry
    return out


def cmd_version(argv):
    try:
        r = subprocess.run(argv, capture_output=True, timeout=15)
        text = (r.stdout + r.stderr).decode("utf-8", "replace").strip().splitlines()
        return text[0].strip() if text else ""
    except (OSError, subprocess.TimeoutExpired):
        return None


def machine_info():
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return dict(uname=subprocess.run(["uname", "-a"], capture_output=True, timeout=10).stdout.decode().strip(),
                nproc=os.cpu_count(), cpu_model=cpu, mem_total=mem,
                loadavg=open("/proc/loadavg").read().strip())


def versions():
    v = dict(
        watchtower=cmd_version([WT_BIN, "--version"]),
        rustc=cmd_version(["rustc", "--version"]),
        wrk=cmd_version(["wrk", "-v"]),
        nginx=cmd_version(["nginx", "-v"]),
        haproxy=cmd_version(["haproxy", "-v"]),
        tinyproxy=cmd_version(["tinyproxy", "-v"]),
        squid=cmd_version(["squid", "-v"]),
        privoxy=cmd_version(["privoxy", "--version"]),
        mitmproxy=cmd_version(["mitmdump", "--version"]),
        openssl=cmd_version(["openssl", "version"]),
        python=sys.version.split()[0],
    )
    return {k: x for k, x in v.items() if x}


# --------------------------------------------------------------------------------------------


def estimate(scens, proxies):
    runs = sum(len(members(sc, proxies)) for sc in scens) * RUNS
    per = DURATION + PAUSE + 0.2  # measured: ~0.05 s of start-up and /proc reading per run
    n_tun = sum(1 for p in proxies.values() if "fwd" in p.ports)
    startup = sum(STARTUP_RUNS * (1.2 if p.name == "mitmproxy" else 0.15) for p in proxies.values())
    return runs, runs * per + n_tun * 4 + startup + 10


def main():
    os.makedirs(os.path.join(WORK, "logs"), exist_ok=True)
    os.makedirs(RESULTS, exist_ok=True)
    t_start = time.time()
    unknown = [x for x in SCEN_FILTER if x not in {sc["id"] for sc in SCENARIOS}]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; known: {', '.join(sc['id'] for sc in SCENARIOS)}")
    scens = [sc for sc in SCENARIOS if (sc["id"] in SCEN_FILTER if SCEN_FILTER else sc.get("default", True))]
    known_peers = {p[0] for p in PEERS}
    if any(x not in known_peers for x in ONLY):
        raise SystemExit(f"ONLY: unknown name(s) {[x for x in ONLY if x not in known_peers]}; "
                         f"known: {', '.join(p[0] for p in PEERS)}")
    skipped = {}
    if os.environ.get("SKIPPED_JSON"):
        try:
            skipped.update(json.loads(os.environ["SKIPPED_JSON"]))
        except ValueError:
            pass
    with open(os.path.join(WORK, "report.lua"), "w") as f:
        f.write(WRK_LUA)
    log("== set-up")
    make_certs()
    start_backend()
    log(f"  backend nginx (core {LOAD_CPU}) http 127.0.0.1:{E.bport} https 127.0.0.1:{E.btls}; "
        f"TCP sink/source (core {LOAD_CPU}) 127.0.0.1:{E.sink}")
    proxies = start_proxies(skipped)
    if "watchtower" not in proxies and (not ONLY or "watchtower" in ONLY):
        log(f"!! Watchtower did not start: {skipped.get('watchtower')}")
    bad = probes(proxies)
    for name, msgs in bad.items():
        log(f"  probe {name}: {'; '.join(msgs)}")
    for name, why in skipped.items():
        log(f"  SKIP {name}: {why}")

    nruns, secs = estimate(scens, proxies)
    log("")
    log(f"== plan: {len(scens)} scenarios x {RUNS} runs x {DURATION:g} s, interleaved; "
        f"proxies on core {PROXY_CPU}, load + backend on core {LOAD_CPU}")
    for sc in scens:
        log(f"  {sc['id']:<18} {', '.join(members(sc, proxies))}")
    log(f"  memory: idle RSS, RSS after the runs, +{IDLE_TUNNELS} idle tunnels; start-up x{STARTUP_RUNS}; binary size")
    log(f"  {nruns} measured runs; estimated {secs / 60:.1f} min (+ install/build time)")
    log("")

    data = dict(
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        command="bash benches/peers.sh",
        settings=dict(DURATION=DURATION, RUNS=RUNS, CONC=CONC, ONLY=",".join(ONLY), SCENARIOS=",".join(SCEN_FILTER),
                      proxy_cpu=PROXY_CPU, load_cpu=LOAD_CPU, clock_ticks_per_s=CLK),
        machine=machine_info(),
        versions=versions(),
        skipped=skipped,
        notes={n: px.notes for n, px in proxies.items() if px.notes},
        probes=bad,
        scenarios=[],
        memory={},
        binary={},
        startup={},
    )

    log("== memory at idle")
    time.sleep(2.0)
    for n, px in proxies.items():
        if px.alive():
            rss, pss = memory_kib(px.proc.pid)
            data["memory"].setdefault(n, {})["idle_rss_kib"] = rss
            data["memory"][n]["idle_pss_kib"] = pss
            log(f"  {n:<10} RSS {rss / 1024:7.1f} MiB  PSS {pss / 1024:7.1f} MiB")

    for sc in scens:
        ms = members(sc, proxies)
        entry = dict(id=sc["id"], title=sc["title"], short=sc["short"], how=sc["how"], unit=sc["unit"],
                     cpu_unit=sc["cpu_unit"],
                     members={m: dict(runs=[]) for m in ms})
        data["scenarios"].append(entry)
        log(f"== {sc['id']}: {sc['title']}")
        for r in range(RUNS):
            for m in ms:
                res = measure(sc, m, proxies)
                entry["members"][m]["runs"].append(res)
                if res["ok"]:
                    cpu = res.get("cpu_per_unit")
                    log(f"  run {r + 1}/{RUNS} {m:<10} {report.fmt_rate(res['rate'], sc['unit']):>10} {sc['unit']:<12}"
                        + (f" p50 {report.fmt_us(res['p50_us'])} p99 {report.fmt_us(res['p99_us'])}"
                           if res.get("p50_us") is not None else "")
                        + (f"  CPU {cpu:.1f} {sc['cpu_unit']}" if cpu is not None else ""))
                else:
                    log(f"  run {r + 1}/{RUNS} {m:<10} FAILED: {res['error'][:300]}")
                time.sleep(PAUSE)
        report.summarize_scenario(entry)
        log("")
        log(report.scenario_table(entry))
        log("")
        with open(os.path.join(RESULTS, "partial.json"), "w") as f:
            json.dump(data, f, indent=1)

    log("== memory after the runs, and with idle tunnels")
    for n, px in proxies.items():
        if px.alive():
            rss, pss = memory_kib(px.proc.pid)
            data["memory"].setdefault(n, {})["after_rss_kib"] = rss
            data["memory"][n]["after_pss_kib"] = pss
        else:
            data["memory"].setdefault(n, {})["error"] = px.error
    for n, px in proxies.items():
        if "fwd" in px.ports and px.alive():
            res = idle_tunnels(px)
            data["memory"][n]["tunnels"] = res
            if res["ok"]:
                log(f"  {n:<10} {res['open']} idle tunnels: +{res['per_tunnel_kib']:.1f} KiB RSS each "
                    f"({res['rss_before_kib'] / 1024:.1f} -> {res['rss_with_kib'] / 1024:.1f} MiB)")
            else:
                log(f"  {n:<10} idle tunnels FAILED: {res['error']}")

    log("== start-up time (stopping the running instances first)")
    for px in proxies.values():
        stop(px.proc)
    for n, px in proxies.items():
        res = startup_time(px)
        data["startup"][n] = res
        log(f"  {n:<10} " + (f"{res['median_ms']:.2f} ms (median of {STARTUP_RUNS})" if res["ok"]
                              else f"FAILED: {res['error']}"))

    data["binary"] = binary_sizes(proxies)
    data["elapsed_s"] = round(time.time() - t_start, 1)
    data["failures"] = {n: px.error for n, px in proxies.items() if px.error}

    report.write_all(data, RESULTS)
    try:
        os.remove(os.path.join(RESULTS, "partial.json"))
    except OSError:
        pass
    log("")
    log(open(os.path.join(RESULTS, "latest.md")).read())
    log(f"wrote {os.path.join(RESULTS, 'latest.md')}, latest.json, ratios.svg "
        f"({data['elapsed_s'] / 60:.1f} min)")


def _on_signal(signum, frame):
    stop_all()
    sys.exit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    try:
        main()
    finally:
        stop_all()
