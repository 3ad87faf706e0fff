"""Convergence run: many random sequences of actions, syncs and faults, with figures.

    python bench/convergence.py --seeds 20 --steps 60 [--first-seed 1000] [--json]
    python bench/convergence.py --replay failing.jsonl   # a sequence's actions, one a line
    python bench/convergence.py --seeds 1 --first-seed 3 --steps 25 --shrink 40

Each failing sequence is printed with its seed and actions and saved under --out, so
`--replay` repeats it exactly. `--shrink N` then replays it with actions left out (at most N
replays) and prints the shortest sequence that still shows its first discrepancy. Exits 1 when
any sequence found a discrepancy.
"""

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.convergence import (  # noqa: E402
    ConvergenceCluster,
    Outcome,
    Sequence,
    convergence_cluster,
)


def signature(discrepancy: str) -> str:
    """What a discrepancy says without its ids, numbers, values and satellite."""
    plain = re.sub(r"[0-9a-f]{32}", "<id>", discrepancy)
    plain = re.sub(r"satellite\d", "satellite", re.sub(r"\d+", "#", plain))
    return plain.split(": expected ")[0].split(", e.g.")[0]


def without_orphans(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Leave out actions on transactions that no remaining action creates."""
    created: set[str] = set()
    kept = []
    for action in actions:
        if action["op"] == "create":
            created.add(action["tx"])
        elif "tx" in action and action["tx"] not in created:
            continue
        kept.append(action)
    return kept


def shrink(cluster: ConvergenceCluster, outcome: Outcome, budget: int) -> Outcome:
    """The shortest sequence found (removing chunks, then single actions) that still shows
    `outcome`'s first discrepancy, within `budget` replays."""
    wanted = signature(outcome.discrepancies[0])
    best, chunk = outcome, max(1, len(outcome.actions) // 2)
    while chunk >= 1 and budget > 0:
        start = 0
        while start < len(best.actions) and budget > 0:
            actions = best.actions
            candidate = without_orphans(actions[:start] + actions[start + chunk :])
            budget -= 1
            tried = Sequence(cluster, outcome.seed).replay(candidate)
            if wanted in {signature(d) for d in tried.discrepancies}:
                best = tried
                print(f"  shrunk to {len(best.actions)} actions", flush=True)
            else:
                start += chunk
        chunk //= 2
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--replay", type=Path, help="a file of actions, one JSON object a line")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "convergence")
    parser.add_argument("--json", action="store_true", help="print the totals as one JSON object")
    parser.add_argument("--shrink", type=int, default=0, help="replays to spend shrinking each")
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory() as workdir, convergence_cluster(Path(workdir)) as cluster:
        provisioned = time.monotonic() - started
        if options.replay:
            actions = [json.loads(line) for line in options.replay.read_text().splitlines() if line]
            outcomes.append(Sequence(cluster).replay(actions))
        else:
            for seed in range(options.first_seed, options.first_seed + options.seeds):
                outcomes.append(Sequence(cluster, seed).run(options.steps))
                outcome = outcomes[-1]
                print(
                    f"seed {seed}: {len(outcome.actions)} steps, {outcome.figures['faults']} "
                    f"faults, {len(outcome.discrepancies)} discrepancies, "
                    f"{outcome.seconds:.1f} s",
                    flush=True,
                )
        for outcome in outcomes if options.shrink else []:
            if outcome.discrepancies:
                print(f"Shrinking seed {outcome.seed}: {outcome.discrepancies[0]}", flush=True)
                shrunk = shrink(cluster, outcome, options.shrink)
                saved = options.out / f"seed-{outcome.seed}-shrunk.jsonl"
                saved.write_text("".join(json.dumps(a) + "\n" for a in shrunk.actions))
                print(f"\nShrunk: {shrunk.report()}\nSaved as {saved}", flush=True)
    figures: Counter[str] = Counter()
    for outcome in outcomes:
        figures.update(outcome.figures)
        if outcome.discrepancies:
            saved = options.out / f"seed-{outcome.seed}.jsonl"
            saved.write_text("".join(json.dumps(action) + "\n" for action in outcome.actions))
            print(f"\n{outcome.report()}\nSaved as {saved}", flush=True)
    failing = [o for o in outcomes if o.discrepancies]
    totals = {
        "sequences": len(outcomes),
        "steps": sum(len(o.actions) for o in outcomes),
        "actions": figures["actions"],
        "syncs": figures["syncs"],
        "faults": figures["faults"],
        "failing_sequences": len(failing),
        "failing_seeds": [o.seed for o in failing],
        "discrepancies": sum(len(o.discrepancies) for o in outcomes),
        "provision_seconds": round(provisioned, 1),
        "seconds": round(time.monotonic() - started, 1),
        "figures": dict(sorted(figures.items())),
    }
    if options.json:
        print(json.dumps(totals))
    else:
        print("\n" + "\n".join(f"{key}: {value}" for key, value in totals.items()))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
