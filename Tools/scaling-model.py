#!/usr/bin/env python3
"""Projects data-parallel training past this machine: seconds per step and
efficiency for N hosts at several link rates, from step times measured by
`charrnn bench` and a cost model of a ring all-reduce of the gradients.

  charrnn bench --configs reference --shape 512,2,B,100,83 --shape 1024,2,B,100,83 ... --json > bench.json
  Tools/scaling-model.py bench.json [--latency-us 25] [--measured "label=ms@N,Gbit"...]

Model: a step on N hosts takes T_c(b) + T_ar, where T_c(b) is the measured
step of one host with b streams (interpolated in log-log between measured
b) and, for P parameters (4P bytes of float gradients),
  T_ar = 2 (N - 1) / N * 4P * 8 / rate + 2 (N - 1) * latency
(a ring: N - 1 reduce-scatter and N - 1 all-gather steps, each sending
4P / N bytes each way at once on a full-duplex link).
Weak scaling keeps 100 streams per host (the batch grows with N); strong
scaling splits a batch of 128 streams (b = 128 / N).
Overlap bound (DDP-style buckets): the fc and upper layer's gradients are
complete when the lower layer's backward through time begins, so at most
the all-reduce of their share of the bytes can hide behind the lower
layer's backward (about half the measured backward).
"""
import json
import math
import sys

HOSTS = [1, 2, 4, 8, 16, 32, 64]
RATES = [1, 10, 25, 100]  # Gbit/s


def params(h, v=83, layers=2):
    total, inputs = 0, v
    for _ in range(layers):
        total += 4 * h * (inputs + h) + 8 * h
        inputs = h
    return total + v * h + v


def upper_share(h, v=83):
    """Bytes whose gradients are final before the lowest layer's backward begins."""
    return (4 * h * (2 * h) + 8 * h + v * h + v) / params(h, v)


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    latency = 25e-6
    if "--latency-us" in argv:
        latency = float(argv[argv.index("--latency-us") + 1]) * 1e-6
    bench = json.load(open(argv[1]))
    steps, backward = {}, {}
    for result in bench["training"]:
        shape = result["shape"]
        if shape["layerCount"] != 2 or shape["steps"] != 100 or shape["cell"] != "lstm":
            continue
        key = (shape["hiddenSize"], shape["batchSize"])
        # a shape measured twice (the reference and a --shape): the lower median
        if key not in steps or result["step"]["median"] < steps[key]:
            steps[key] = result["step"]["median"]
            backward[key] = result["backward"]["median"]

    def measured(table, h, b):
        known = sorted(bb for (hh, bb) in table if hh == h)
        if b in known:
            return table[(h, b)]
        lo = max(x for x in known if x < b)
        hi = min(x for x in known if x > b)
        t = (math.log(b) - math.log(lo)) / (math.log(hi) - math.log(lo))
        return math.exp((1 - t) * math.log(table[(h, lo)]) + t * math.log(table[(h, hi)]))

    def allreduce(n, h, rate):
        if n == 1:
            return 0.0
        return 2 * (n - 1) / n * 4 * params(h) * 8 / (rate * 1e9) + 2 * (n - 1) * latency

    print(f"Compute: {bench['runtime']}; latency per ring step {latency * 1e6:.0f} µs\n")
    for h in sorted({hh for (hh, _) in steps}):
        name = "reference 2 × 512" if h == 512 else f"2 × {h} ({params(h) / params(512):.1f} × the parameters)"
        print(f"### {name}: {params(h):,} parameters, {4 * params(h) / 1e6:.1f} MB of gradients\n")
        for title, per_host in (("Weak scaling: 100 streams per host", lambda n: 100),
                                ("Strong scaling: a batch of 128 streams split over N hosts", lambda n: 128 / n)):
            base = measured(steps, h, 100 if "Weak" in title else 128)
            print(f"{title} (one host: {base:.3f} s per step)\n")
            print("| N | streams/host | compute s | " + " | ".join(f"{r} Gbit/s: s/step, eff." for r in RATES) + " |")
            print("|---|---|---|" + "---|" * len(RATES))
            for n in HOSTS:
                b = per_host(n)
                compute = measured(steps, h, b)
                cells = []
                for rate in RATES:
                    step = compute + allreduce(n, h, rate)
                    work = base if "Weak" in title else base / n  # ideal time per step
                    cells.append(f"{step:.3f}, {work / step * 100:.0f} %")
                print(f"| {n} | {b:g} | {compute:.3f} | " + " | ".join(cells) + " |")
            print()
        # Overlap at 10 Gbit/s: what the best DDP-style overlap could hide.
        print("Overlap at 10 Gbit/s (the most a bucketed all-reduce could hide, as a share of the step):\n")
        print("| N | weak: comm share, overlap saves ≤ | strong: comm share, overlap saves ≤ |")
        print("|---|---|---|")
        for n in HOSTS[1:]:
            cells = []
            for b in (100, 128 / n):
                compute, back = measured(steps, h, b), measured(backward, h, b)
                comm = allreduce(n, h, 10)
                hidden = min(upper_share(h) * comm, back / 2)
                cells.append(f"{comm / (compute + comm) * 100:.1f} %, {hidden / (compute + comm) * 100:.1f} %")
            print(f"| {n} | " + " | ".join(cells) + " |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
