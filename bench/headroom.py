#!/usr/bin/env python3
"""Partition headroom: one service (inventory) from 1 to 48 instances, one
partition each at the end, on the running local stack.

    D2C_RELEASE=1 ./dev up && python3 bench/headroom.py && ./dev down

At each count it starts instances (state in /tmp/d2c-headroom/), waits
until the 48 partitions of inventory.messages are assigned and every
instance is ready (the time is `settled_s`), samples idle CPU and resident
memory of all inventory instances and the broker for 15 s, then runs
`loadgen` checkouts at 20/s for 15 s. One JSON line per count; the extra
instances are stopped at the end (SIGTERM)."""
import json, os, re, subprocess, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/d2c/target"))
B = os.path.join(TARGET, "release")
RUN = os.path.join(ROOT, ".d2c")
STATE = "/tmp/d2c-headroom"
os.makedirs(STATE, exist_ok=True)
procs={}   # n -> (Popen, port)
def pid_of_dev():
    return int(open(f"{RUN}/pids/inventory.pid").read())
def metric(port, name):
    try:
        t=urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except Exception: return None
    m=re.search(rf"^{name} ([0-9.e+-]+)$", t, re.M)
    return float(m.group(1)) if m else None
def ready(port):
    try: return urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2).status==200
    except Exception: return False
def start(n):
    port=29300+n
    env=dict(os.environ, D2C_KAFKA_BROKERS="127.0.0.1:9092", D2C_STATE_DIR=f"{STATE}/i{n}",
             D2C_ADMIN_ADDR=f"127.0.0.1:{port}", RUST_LOG="warn")
    p=subprocess.Popen([f"{B}/d2c-inventory"], env=env, stdout=open(f"{STATE}/i{n}.log","w"), stderr=subprocess.STDOUT)
    procs[n]=(p,port)
def ports():
    return [9102]+[port for (_,port) in procs.values()]
def pids():
    return [pid_of_dev()]+[p.pid for (p,_) in procs.values()]
def cpu_ticks(pid):
    f=open(f"/proc/{pid}/stat").read().rsplit(")",1)[1].split()
    return int(f[11])+int(f[12])
def rss_mb(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])/1024
kafka=int(open(f"{RUN}/broker/broker.pid").read())
rows=[]
for target in [1,2,8,16,24,32,48]:
    t0=time.time()
    while len(procs)+1<target: start(len(procs)+2)
    settled=None
    while time.time()-t0<240:
        counts=[metric(p,"d2c_assigned_partitions") for p in ports()]
        if all(c is not None for c in counts) and sum(counts)==48 and all(ready(p) for p in ports()):
            settled=time.time()-t0; break
        time.sleep(0.5)
    counts=[int(metric(p,"d2c_assigned_partitions") or 0) for p in ports()]
    time.sleep(3)
    a=[cpu_ticks(p) for p in pids()]; k=cpu_ticks(kafka); t=time.time()
    time.sleep(15)
    idle_cores=(sum(cpu_ticks(p) for p in pids())-sum(a))/100/(time.time()-t)
    kafka_cores=(cpu_ticks(kafka)-k)/100/(time.time()-t)
    rss=sum(rss_mb(p) for p in pids())
    lg=subprocess.run([f"{B}/loadgen","--rate","20","--duration","15","--stock","100000"],capture_output=True,text=True)
    out=lg.stdout+lg.stderr
    m=re.search(r"LOADGEN_JSON (.*)", out)
    j=json.loads(m.group(1)) if m else {}
    row=dict(instances=target, settled_s=None if settled is None else round(settled,1), min_p=min(counts), max_p=max(counts),
             idle_cores_inventory=round(idle_cores,3), kafka_cores_idle=round(kafka_cores,3), rss_mb=round(rss),
             checkout_p50=j.get("p50_ms"), checkout_p99=j.get("p99_ms"), answered=j.get("completed"), e202=j.get("accepted"), errors=j.get("errors_total"))
    print(json.dumps(row), flush=True); rows.append(row)
for (p,_) in procs.values(): p.terminate()
