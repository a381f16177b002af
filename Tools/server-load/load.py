#!/usr/bin/env python3
"""Load test of charrnn-server on loopback: 1, 8 and 64 concurrent clients.

Starts the release charrnn-server on a free 127.0.0.1 port (or uses --url),
then for each client count runs streaming requests (POST /v1/generate with
"stream": true) for a bounded time and number of requests, and reports:
characters per second in total, time to first generated character and
per-character latency (p50 = median, p99), and errors; then `charrnn
sample` alone with as many streams as the first and last client counts, and
the server's characters per second as a fraction of it. Then it sends
--soak requests (10,000 by default) and reports the server's resident memory
before and after. Python's standard library only; loopback only.

    Tools/server-load/load.py CHECKPOINT [--seconds 20] [--length 300] [--soak 10000] [--json out.json]
                              [--clients 1,8,64] [--server-args '--stream-interval 0']

Per-character latency: the gap between two Server-Sent Events divided by the
characters the later one carries (the server sends what has been generated
since its last write, so under load one event carries several characters).
"""
import argparse, asyncio, json, os, re, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def percentile(values, fraction):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def generate(host, port, body, stream):
    """One request; returns (status, events as (time, text, name, data)) with times in seconds."""
    reader, writer = await asyncio.open_connection(host, port)
    payload = json.dumps(body).encode()
    writer.write(b"POST /v1/generate HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % (host.encode(), len(payload)) + payload)
    await writer.drain()
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    events = []
    if headers.get("transfer-encoding") == "chunked":
        pending = b""
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                break
            data = await reader.readexactly(size + 2)
            now = time.perf_counter()
            pending += data[:-2]
            while b"\n\n" in pending:
                block, pending = pending.split(b"\n\n", 1)
                name, text = "message", ""
                for line in block.decode().split("\n"):
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        text += line[6:]
                events.append((now, name, json.loads(text)))
    else:
        body_bytes = await reader.read()
        events.append((time.perf_counter(), "body", json.loads(body_bytes) if body_bytes else {}))
    writer.close()
    return status, events


async def client(host, port, deadline, budget, length, stats, seed_base):
    index = 0
    while time.perf_counter() < deadline and budget[0] > 0:
        budget[0] -= 1
        index += 1
        started = time.perf_counter()
        body = {"prime": "The ", "length": length, "seed": seed_base + index, "stream": True}
        try:
            status, events = await generate(host, port, body, True)
        except Exception as error:  # a refused or broken connection is an error, not a crash
            stats["errors"].append(repr(error))
            continue
        if status != 200 or not events or events[-1][1] != "end" or events[-1][2].get("finish_reason") != "length":
            stats["errors"].append(f"status {status}, last event {events[-1] if events else None}")
            continue
        previous = None
        for moment, name, data in events[1:-1]:  # the first event is the prime
            count = len(data.get("text", ""))
            if previous is None:
                stats["first"].append(moment - started)
            else:
                stats["per_char"].extend([(moment - previous) / count] * count)
            previous = moment
        stats["characters"] += events[-1][2]["length"]
        stats["requests"] += 1


async def phase(host, port, clients, seconds, max_requests, length):
    stats = {"first": [], "per_char": [], "characters": 0, "requests": 0, "errors": []}
    budget = [max_requests]
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(client(host, port, deadline, budget, length, stats, 1_000_000 * c) for c in range(clients)))
    elapsed = time.perf_counter() - started
    return {
        "clients": clients, "requests": stats["requests"], "errors": len(stats["errors"]),
        "error_examples": stats["errors"][:3], "seconds": round(elapsed, 2),
        "chars_per_second": round(stats["characters"] / elapsed, 1),
        "first_char_ms_median": round(1000 * statistics.median(stats["first"]), 2) if stats["first"] else None,
        "first_char_ms_p99": round(1000 * percentile(stats["first"], 0.99), 2) if stats["first"] else None,
        "per_char_ms_median": round(1000 * statistics.median(stats["per_char"]), 3) if stats["per_char"] else None,
        "per_char_ms_p99": round(1000 * percentile(stats["per_char"], 0.99), 3) if stats["per_char"] else None,
    }


async def soak(host, port, count, clients, length):
    """`count` short requests, half streamed, from `clients` at once; errors counted."""
    remaining = [count]
    errors = []

    async def one(c):
        while remaining[0] > 0:
            remaining[0] -= 1
            stream = remaining[0] % 2 == 0
            try:
                status, events = await generate(host, port, {"length": length, "seed": remaining[0], "stream": stream}, stream)
                if status != 200:
                    errors.append(status)
            except Exception as error:
                errors.append(repr(error))
    await asyncio.gather(*(one(c) for c in range(clients)))
    return errors


def cpu_seconds(pid):
    """User + system CPU seconds of a process (from /proc), or of this one for None."""
    if pid is None:
        import resource
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+)", status.read()).group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--seconds", type=float, default=20, help="time per client count (bounded)")
    parser.add_argument("--max-requests", type=int, default=2000, help="requests per client count at most")
    parser.add_argument("--length", type=int, default=300, help="characters per request")
    parser.add_argument("--clients", default="1,8,64")
    parser.add_argument("--soak", type=int, default=10000, help="requests for the memory check (0: none)")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--server-args", default="", help="more flags for charrnn-server, e.g. '--stream-interval 0'")
    arguments = parser.parse_args()

    for product in ["charrnn-server", "charrnn"]:
        subprocess.run(["swift", "build", "--package-path", ROOT, "-c", "release", "--product", product],
                       check=True, stdout=subprocess.DEVNULL)
    bin_path = subprocess.run(["swift", "build", "--package-path", ROOT, "-c", "release", "--show-bin-path"],
                              check=True, capture_output=True, text=True).stdout.strip()
    binary = bin_path + "/charrnn-server"
    server = subprocess.Popen([binary, "--checkpoint", arguments.checkpoint, "--port", "0", "--max-queued", "1024"]
                              + arguments.server_args.split(),
                              stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        match = re.search(r"http://(127\.0\.0\.1):(\d+)/ \((.*)\)", line)
        if not match:
            sys.exit(f"load: the server did not start: {line}")
        host, port, model = match.group(1), int(match.group(2)), match.group(3)
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
        report = {"model": model, "cpu": cpu, "cores": os.cpu_count(), "length": arguments.length, "phases": []}
        print(f"server: {model}; CPU: {cpu}, {os.cpu_count()} cores; {arguments.length} characters per request")
        asyncio.run(phase(host, port, 4, 2, 40, arguments.length))  # warm-up
        for clients in [int(c) for c in arguments.clients.split(",")]:
            server_cpu, client_cpu = cpu_seconds(server.pid), cpu_seconds(None)
            result = asyncio.run(phase(host, port, clients, arguments.seconds, arguments.max_requests, arguments.length))
            # How much of the machine each side used: the client shares the server's cores.
            result["server_cores"] = round((cpu_seconds(server.pid) - server_cpu) / result["seconds"], 2)
            result["client_cores"] = round((cpu_seconds(None) - client_cpu) / result["seconds"], 2)
            report["phases"].append(result)
            print(f"{clients:3d} clients: {result['chars_per_second']:9.1f} chars/s, {result['requests']} requests, "
                  f"{result['errors']} errors; first char {result['first_char_ms_median']} ms median, "
                  f"{result['first_char_ms_p99']} ms p99; per char {result['per_char_ms_median']} ms median, "
                  f"{result['per_char_ms_p99']} ms p99; cores busy: server {result['server_cores']}, "
                  f"this client {result['client_cores']}")
        phases = report["phases"]
        if len(phases) >= 2 and phases[0]["chars_per_second"]:
            report["ratio_last_to_first"] = round(phases[-1]["chars_per_second"] / phases[0]["chars_per_second"], 2)
            print(f"{phases[-1]['clients']} clients / {phases[0]['clients']} client: {report['ratio_last_to_first']} x")
        # The same model without HTTP, in the same run: charrnn sample with
        # one stream, and with as many streams as the first and last
        # phases' clients; the time of the same command with --length 0
        # (process start, model load, the prime) is taken off.
        report["sample"] = {}
        def sample_seconds(count, length):
            started = time.perf_counter()
            subprocess.run([bin_path + "/charrnn", "sample", "--checkpoint", arguments.checkpoint, "--length", str(length),
                            "--seed", "1", "--count", str(count)], check=True, stdout=subprocess.DEVNULL)
            return time.perf_counter() - started
        report["efficiency"] = {}
        for phase_result in [phases[0], phases[-1]] if phases else []:
            count = phase_result["clients"]
            length = max(2000, 20000 // count)
            fixed = statistics.median(sample_seconds(count, 0) for _ in range(3))
            rate = count * length / (statistics.median(sample_seconds(count, length) for _ in range(3)) - fixed)
            report["sample"][str(count)] = round(rate, 1)
            efficiency = phase_result["chars_per_second"] / rate
            report["efficiency"][str(count)] = round(efficiency, 2)
            print(f"charrnn sample --count {count}: {rate:9.1f} chars/s (no HTTP; median of 3, less the same command's time "
                  f"with --length 0: {fixed:.3f} s); the server with {count} client{'s' if count > 1 else ''}: {efficiency:.2f} x of it")
        if arguments.soak:
            asyncio.run(soak(host, port, 500, 64, 20))  # the server's pools and caches reach their size
            before = resident_kib(server.pid)
            started = time.perf_counter()
            errors = asyncio.run(soak(host, port, arguments.soak, 64, 20))
            after = resident_kib(server.pid)
            report["soak"] = {"requests": arguments.soak, "errors": len(errors), "rss_kib_before": before,
                              "rss_kib_after": after, "seconds": round(time.perf_counter() - started, 1)}
            print(f"soak: {arguments.soak} requests (20 characters, half streamed, 64 clients) in "
                  f"{report['soak']['seconds']} s, {len(errors)} errors; resident memory {before} KiB before, {after} KiB after")
        if arguments.json:
            with open(arguments.json, "w") as out:
                json.dump(report, out, indent=2)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
