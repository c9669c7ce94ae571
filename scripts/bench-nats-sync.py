#!/usr/bin/env python3
"""What a JetStream acknowledgement costs with 1 or 3 copies and with the default sync or
`sync_interval: always` (ADR 0016; docs/benchmarks.md, "Stream copies and the sync policy").

Usage: scripts/bench-nats-sync.py CONFIG RUN, CONFIG one of
  a: 1 server, default sync    b: 1 server, sync_interval: always
  c: 3 servers, R3, default    d: 3 servers, R3, sync_interval: always
Needs `pip install nats-py` and nats-server (`make bootstrap`; $VERITY_NATS_SERVER overrides).
Each message is 627 bytes (a chain event) with a Nats-Msg-Id and an expected last sequence, as
the sequencer publishes: 2,000 awaited one by one, then 20,000 with 256 in flight."""
import asyncio, hashlib, json, os, shutil, socket, subprocess, sys, time

import nats

NS = os.environ.get("VERITY_NATS_SERVER") or shutil.which("nats-server") or "/usr/local/bin/nats-server"
BASE = os.environ.get("BENCH_DIR", "/tmp/verity-bench-nats-sync")
MSG = os.urandom(627)
SERIAL_N = 2000
PIPE_N = 20000
WINDOW = 256


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start_servers(cfg, run):
    cluster = cfg in ("c", "d")
    always = cfg in ("b", "d")
    n = 3 if cluster else 1
    root = f"{BASE}/{cfg}{run}"
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    rports = [free_port() for _ in range(n)]
    procs, dirs = [], []
    for i in range(n):
        d = f"{root}/n{i+1}"
        os.makedirs(d)
        lines = [f"server_name: n{i+1}"]
        # store_dir comes from -sd; repeating it in the block makes the server refuse to start
        # ("Duplicate 'store_dir' configuration"), so the block holds only sync_interval.
        if always:
            lines.append("jetstream {\n  sync_interval: always\n}")
        if cluster:
            routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in rports)
            lines.append(
                f'cluster {{\n  name: bench\n  listen: "127.0.0.1:{rports[i]}"\n  routes: [{routes}]\n}}'
            )
        conf = "\n".join(lines) + "\n"
        open(f"{d}/server.conf", "w").write(conf)
        p = subprocess.Popen(
            [NS, "-c", f"{d}/server.conf", "-js", "-a", "127.0.0.1", "-p", "-1",
             "-sd", f"{d}/js", "--ports_file_dir", d, "-l", f"{d}/server.log"],
            stdout=subprocess.DEVNULL, stderr=open(f"{d}/stderr", "w"))
        procs.append(p)
        dirs.append(d)
    open(f"{root}/pids", "w").write(" ".join(str(p.pid) for p in procs))
    urls = []
    for p, d in zip(procs, dirs):
        pf = f"{d}/nats-server_{p.pid}.ports"
        for _ in range(200):
            if os.path.exists(pf):
                try:
                    urls.append(json.load(open(pf))["nats"][0])
                    break
                except Exception:
                    pass
            time.sleep(0.05)
        else:
            for q in procs: q.kill()
            raise RuntimeError(f"no ports file for {d}")
    return procs, dirs, urls


async def wait_js(nc, replicas):
    for _ in range(300):
        try:
            r = await nc.request("$JS.API.INFO", b"", timeout=1)
            j = json.loads(r.data)
            if "error" not in j:
                return
        except Exception:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("JetStream not ready")


async def make_stream(nc, name, replicas):
    cfg = {"name": name, "subjects": [f"bench.{name}.>"], "storage": "file",
           "num_replicas": replicas, "duplicate_window": 120 * 10**9}
    for _ in range(100):
        try:
            r = await nc.request(f"$JS.API.STREAM.CREATE.{name}", json.dumps(cfg).encode(), timeout=5)
            j = json.loads(r.data)
            if "error" not in j:
                return
            last = j["error"]
        except Exception as e:
            last = repr(e)
        await asyncio.sleep(0.3)
    raise RuntimeError(f"stream create failed: {last}")


def hdrs(tag, seq):
    return {"Nats-Msg-Id": hashlib.sha256(f"{tag}-{seq}".encode()).hexdigest(),
            "Nats-Expected-Last-Sequence": str(seq - 1)}


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def serial(nc, name, tag):
    lat, errs = [], 0
    subj = f"bench.{name}.events"
    t0 = time.perf_counter()
    for seq in range(1, SERIAL_N + 1):
        a = time.perf_counter()
        r = await nc.request(subj, MSG, timeout=10, headers=hdrs(tag, seq))
        lat.append(time.perf_counter() - a)
        j = json.loads(r.data)
        if "error" in j or j.get("seq") != seq:
            errs += 1
            if errs < 4:
                print("serial err", seq, j, file=sys.stderr)
    el = time.perf_counter() - t0
    return {"p50_ms": pct(lat, .5) * 1e3, "p99_ms": pct(lat, .99) * 1e3,
            "rate": SERIAL_N / el, "errs": errs}


async def pipelined(nc, name, tag):
    subj = f"bench.{name}.events"
    inbox = nc.new_inbox()
    loop = asyncio.get_running_loop()
    futs = {}

    async def cb(m):
        f = futs.pop(m.subject.rsplit(".", 1)[1], None)
        if f is not None and not f.done():
            f.set_result(m.data)
    sub = await nc.subscribe(inbox + ".*", cb=cb, pending_msgs_limit=-1, pending_bytes_limit=-1)
    await nc.flush()
    errs = 0
    inflight = []
    t0 = time.perf_counter()
    head = 0
    for seq in range(1, PIPE_N + 1):
        if len(inflight) - head >= WINDOW:
            s, f = inflight[head]; head += 1
            j = json.loads(await asyncio.wait_for(f, 30))
            if "error" in j or j.get("seq") != s:
                errs += 1
                if errs < 4: print("pipe err", s, j, file=sys.stderr)
        f = loop.create_future()
        futs[str(seq)] = f
        inflight.append((seq, f))
        await nc.publish(subj, MSG, reply=f"{inbox}.{seq}", headers=hdrs(tag, seq))
    for s, f in inflight[head:]:
        j = json.loads(await asyncio.wait_for(f, 30))
        if "error" in j or j.get("seq") != s:
            errs += 1
            if errs < 4: print("pipe err", s, j, file=sys.stderr)
    el = time.perf_counter() - t0
    await sub.unsubscribe()
    return {"rate": PIPE_N / el, "errs": errs}


async def main(cfg, run):
    cluster = cfg in ("c", "d")
    replicas = 3 if cluster else 1
    procs, dirs, urls = start_servers(cfg, run)
    try:
        nc = await nats.connect(servers=[urls[0]], connect_timeout=5, max_reconnect_attempts=0)
        await wait_js(nc, replicas)
        tag = f"{cfg}{run}{time.time()}"
        await make_stream(nc, "S1", replicas)
        s = await serial(nc, "S1", tag + "s")
        await make_stream(nc, "S2", replicas)
        p = await pipelined(nc, "S2", tag + "p")
        # where's the leader (for the record)
        r = await nc.request("$JS.API.STREAM.INFO.S2", b"", timeout=5)
        info = json.loads(r.data)
        leader = info.get("cluster", {}).get("leader")
        msgs = info.get("state", {}).get("messages")
        await nc.close()
        res = {"cfg": cfg, "run": run, "serial": s, "pipe": p, "leader": leader,
               "S2_msgs": msgs, "connected_to": urls[0]}
        print(json.dumps(res))
    finally:
        for pr in procs:
            pr.terminate()
        for pr in procs:
            try:
                pr.wait(10)
            except subprocess.TimeoutExpired:
                pr.kill()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
