#!/usr/bin/env python3
"""Summarises runs' metrics.jsonl: median seconds per step (the first 3
steps left out as warm-up) and, for runs of several processes, the median
comm_seconds and its share of the step.

  Tools/mpi-bench/summarize.py RUN_DIR...
"""
import json, sys, statistics as st
for d in sys.argv[1:]:
    recs=[json.loads(l) for l in open(d+"/metrics.jsonl") if l.strip()]
    it=[r for r in recs if r["kind"]=="iteration"][3:]   # skip warm-up
    s=[r["seconds"] for r in it]; c=[r.get("comm_seconds") for r in it if r.get("comm_seconds") is not None]
    line=f"{d}: {len(s)} steps, median {st.median(s):.4f} s/step"
    if c: line+=f", comm median {st.median(c)*1e3:.1f} ms ({st.median(c)/st.median(s)*100:.1f}% of step), min {min(c)*1e3:.1f} ms"
    v=[r["val_loss"] for r in recs if r["kind"]=="validation"]
    print(line, "val", v)
