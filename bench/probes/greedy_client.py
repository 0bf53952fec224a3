#!/usr/bin/env python3
"""A greedy client against a small one (bench/README, "A greedy client").

Starts `WEIR serve` on a fresh data directory, then for SECONDS makes single
5-byte durable appends on one connection and reports their latency, while
(MODE `pipe`) another connection pipelines AppendBatches of 2 x 16 MiB and
reads its replies, or (MODE `none`) nothing else runs. Prints the small
client's count, p50, p99 and max, the daemon's peak RssAnon, and how long
SIGTERM took. Needs the `msgpack` Python package (`pip install msgpack`).

usage: greedy_client.py WEIR none|pipe SECONDS DIR   (DIR is deleted first)
"""
import os, shutil, signal, socket, struct, subprocess, sys, threading, time
import msgpack

weir, mode, secs, root = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]


def frame(obj):
    b = msgpack.packb(obj, use_bin_type=True)
    return struct.pack("<I", len(b)) + b


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        c = s.recv(n - len(buf))
        if not c:
            raise EOFError
        buf += c
    return buf


def recv_frame(s):
    n = struct.unpack("<I", recv_exact(s, 4))[0]
    return msgpack.unpackb(recv_exact(s, n), raw=False)


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(frame([list(b"weir"), [1], "greedy-probe"]))
    recv_frame(s)
    return s


def ev(entity, payload):
    # AppendRequest: entity, scope, kind, payload, event id, correlation,
    # causation, idempotency key, expected version.
    return [entity, "s", 0x1001, payload, None, None, None, None, "Any"]


def anon_kb(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("RssAnon"):
            return int(line.split()[1])
    return 0


shutil.rmtree(root, ignore_errors=True)
os.makedirs(root)
sock = os.path.join(root, "data", "weir.sock")
daemon = subprocess.Popen([weir, "serve", "--data-dir", os.path.join(root, "data")],
                          stdout=subprocess.DEVNULL, stderr=open(root + ".log", "w"))
for _ in range(300):
    try:
        connect(sock).close()
        break
    except OSError:
        time.sleep(0.05)
stop, peak = [False], [0]


def greedy():
    s = connect(sock)
    big = b"\x01" * ((16 << 20) - 4096)
    req = frame([7, {"AppendBatch": [ev("a:1", big), ev("a:2", big)]}])

    def replies():
        try:
            while True:
                recv_frame(s)
        except Exception:
            pass
    threading.Thread(target=replies, daemon=True).start()
    try:
        while not stop[0]:
            s.sendall(req)
    except OSError:
        pass


def monitor():
    while not stop[0]:
        peak[0] = max(peak[0], anon_kb(daemon.pid))
        time.sleep(0.2)


if mode == "pipe":
    threading.Thread(target=greedy, daemon=True).start()
threading.Thread(target=monitor, daemon=True).start()
time.sleep(1)
small = connect(sock)
lat, t0, i = [], time.time(), 0
while time.time() - t0 < secs:
    i += 1
    a = time.time()
    small.sendall(frame([i, {"Append": ev("v:1", b"hello")}]))
    r = recv_frame(small)
    lat.append((time.time() - a) * 1000)
    assert "Ok" in r[1], r
stop[0] = True
lat.sort()
q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))]
t1 = time.time()
daemon.send_signal(signal.SIGTERM)
daemon.wait(60)
print("mode=%s appends=%d p50=%.2fms p99=%.2fms max=%.1fms peak_anon=%dMB stop=%.1fs"
      % (mode, len(lat), q(.5), q(.99), lat[-1], peak[0] // 1024, time.time() - t1))
shutil.rmtree(root, ignore_errors=True)
