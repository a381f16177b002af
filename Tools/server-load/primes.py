#!/usr/bin/env python3
"""Long primes through charrnn-server: how long until the first generated
character, for a prime sent once, sent again, and sent again extended.

    Tools/server-load/primes.py CHECKPOINT --text CORPUS [--characters 200000] [--repeats 3] [--server PATH] [--server-args FLAGS]
                                [--background N]

Starts charrnn-server (release build by default) on a free loopback port and
sends, `--repeats` times each with a fresh prime (a different slice of
CORPUS, so the cache cannot help the first), three streamed requests of 10
characters: the prime; the same prime (its state cached); the prime plus
the next 10 characters of CORPUS (extending it); with `--background N`,
while N other clients keep streams generating beside them (a busy server).
It reports the time from
sending to the first generated character for each (median of the repeats),
prime characters per second for the first, and the server's prime-cache
counters. Python's standard library only.
"""
import argparse, http.client, json, os, re, shlex, socket, statistics, subprocess, sys, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def first_character(port, prime):
    """Seconds from sending the request to the first generated character."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = json.dumps({"prime": prime, "length": 10, "seed": 1, "stream": True})
    start = time.perf_counter()
    connection.request("POST", "/v1/generate", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    if response.status != 200:
        sys.exit(f"status {response.status}: {response.read()[:300]!r}")
    seen = 0
    first = None
    for line in response:
        if line.startswith(b"data: ") and b'"text"' in line:
            text = json.loads(line[6:])["text"]
            seen += len(text)
            if first is None and seen > len(prime):
                first = time.perf_counter() - start
    connection.close()
    return first


def keep_generating(port, stop):
    """One background client: streamed requests, one after another, until `stop` is set."""
    while not stop.is_set():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        body = json.dumps({"prime": "The ", "length": 20000, "stream": True})
        connection.request("POST", "/v1/generate", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        for _ in response:
            if stop.is_set():
                break
        connection.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--text", required=True)
    parser.add_argument("--characters", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--server", default=os.path.join(ROOT, ".build/release/charrnn-server"))
    parser.add_argument("--background", type=int, default=0, help="clients generating beside the primes")
    parser.add_argument("--server-args", default="", help="more flags for the server, e.g. '--precision bf16'")
    args = parser.parse_args()
    corpus = open(args.text, encoding="utf-8").read()
    if len(corpus) < args.repeats * (args.characters + 10):
        sys.exit("the corpus is shorter than the primes asked for")
    server = subprocess.Popen([args.server, "--checkpoint", args.checkpoint, "--port", "0", "--timeout", "3000",
                               "--max-body-bytes", str(8 << 20)] + shlex.split(args.server_args),
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(re.search(r":(\d+)/", server.stdout.readline()).group(1))
        stop = threading.Event()
        background = [threading.Thread(target=keep_generating, args=(port, stop), daemon=True) for _ in range(args.background)]
        for client in background:
            client.start()
        time.sleep(1 if background else 0)
        times = {"first": [], "again": [], "extended": []}
        for repeat in range(args.repeats):
            start = repeat * (args.characters + 10)
            prime = corpus[start:start + args.characters]
            times["first"].append(first_character(port, prime))
            times["again"].append(first_character(port, prime))
            times["extended"].append(first_character(port, corpus[start:start + args.characters + 10]))
        stop.set()
        metrics = http.client.HTTPConnection("127.0.0.1", port)
        metrics.request("GET", "/metrics")
        counters = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(charrnn_prime_\w+) (\S+)$", metrics.getresponse().read().decode(), re.M)}
        result = {name: statistics.median(values) for name, values in times.items()}
        result["prime_characters_per_second"] = args.characters / result["first"]
        result["characters"] = args.characters
        result["background_clients"] = args.background
        result["counters"] = counters
        print(json.dumps(result, indent=1))
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
