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

With --feedback K, instead: would the prediction corrected by what serving observed do better
than the cold one? For each plan, the p50 of requests K.. set against the cold prediction and
against the prediction with each measured term replaced by its mean over requests ..K (what
the operator's per-term feedback re-costs the same plan to) or by its median there; the
entry and HTTP costs ("other") stay predicted. Counts the runs each misses by over 10%.

    python3 scripts/demo-terms.py [--pace bench/pace.json] bench/demo-runs-*/run*.json
    python3 scripts/demo-terms.py --feedback 4 bench/demo-runs-*/run*.json
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


def feedback(paths, k):
    misses = {}
    print("run | plan | cold | feedback, means | feedback, medians")
    for path in paths:
        for plan in json.load(open(path))["plans"]:
            reqs = plan.get("requests") or []
            if len(reqs) < k + 6:
                continue
            terms = [sum(r["compute"].values()) + sum(r["codec"].values()) + sum(r["hops"].values()) for r in reqs]
            p50 = statistics.median(r["latency_ms"] for r in reqs[k:])
            other = plan["predicted_ms"] - sum(plan["predicted_compute_ms"].values()) - sum(
                plan["predicted_codec_ms"].values()) - sum(plan["predicted_transfer_ms"].values())
            ratios = [p50 / plan["predicted_ms"], p50 / (other + statistics.mean(terms[:k])),
                      p50 / (other + statistics.median(terms[:k]))]
            name = plan["strategy"]
            m = misses.setdefault(name, [0, 0, 0, 0])
            m[3] += 1
            for i, r in enumerate(ratios):
                m[i] += abs(r - 1) > 0.10
            print(f"{path} | {name} | " + " | ".join(f"{r:.3f}" for r in ratios))
    for name, (c, fm, fd, n) in misses.items():
        print(f"{name}: over 10% off in {c} (cold), {fm} (means), {fd} (medians) of {n} runs")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pace", help="a bench pace JSON whose 4 s windows stand in for a profile")
    ap.add_argument("--feedback", type=int, metavar="K",
                    help="replay per-term feedback from each plan's first K requests instead")
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()
    if a.feedback:
        feedback(a.runs, a.feedback)
        return
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
