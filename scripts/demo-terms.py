#!/usr/bin/env python3
"""Why a demo run's served p50 sits above the sum of its terms' medians (docs/benchmarks.md).

For the CNNPC plan of each saved demo run (`cnnpc demo --output json`, with `plans[].requests`),
prints, each as a share of the served p50:
  - the sum of the per-term medians (what an additive latency model of medians predicts);
  - the median of the sum when each request's machine-bound terms (compute and codec, which
    follow the host's speed together), its links and its rest are drawn independently from the
    served requests (every combination enumerated);
  - the same with the machine-bound terms taken from the pace trace's 4 s windows instead (what
    a profile window sees), the median over windows; with --pace only;
and the share of requests whose machine-bound terms ran 20% over their median.

    python3 scripts/demo-terms.py [--pace bench/pace.json] bench/demo-runs-*/run*.json
"""
import argparse
import json
import statistics


def medians_of_sums(*columns):
    sums = [0.0]
    for col in columns:
        sums = [s + x for s in sums for x in col]
    return statistics.median(sums)


def windows(pace_path, seconds=4.0, step=7.0):
    trace = json.load(open(pace_path))["trace"]
    out, t, end = [], trace[0]["t"], trace[-1]["t"]
    while t + seconds <= end:
        w = [s["ms"] for s in trace if t <= s["t"] < t + seconds]
        m = statistics.median(w)
        out.append([x / m for x in w])
        t += step
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pace", help="a bench pace JSON whose 4 s windows stand in for a profile")
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()
    pace = windows(a.pace) if a.pace else None
    print("run | sum of medians | served terms convolved | profile windows convolved | slow share")
    for path in a.runs:
        plan = json.load(open(path))["plans"][0]
        reqs = plan.get("requests") or []
        if not reqs:
            print(f"{path} | no per-request terms (older run)")
            continue
        machine = [sum(r["compute"].values()) + sum(r["codec"].values()) for r in reqs]
        links = [sum(r["hops"].values()) for r in reqs]
        rest = [r["latency_ms"] - m - l for r, m, l in zip(reqs, machine, links)]
        p50 = statistics.median([r["latency_ms"] for r in reqs])
        m = statistics.median(machine)
        summed = (m + statistics.median(links) + statistics.median(rest)) / p50
        served = medians_of_sums(machine, links, rest) / p50
        windowed = "-"
        if pace:
            per = [medians_of_sums([m * x for x in w], links, rest) / p50 for w in pace]
            windowed = f"{statistics.median(per):.3f}"
        slow = sum(x > 1.2 * m for x in machine) / len(machine)
        print(f"{path} | {summed:.3f} | {served:.3f} | {windowed} | {slow:.2f}")


if __name__ == "__main__":
    main()
