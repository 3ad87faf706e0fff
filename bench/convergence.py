"""Convergence run: many random sequences of actions, syncs and faults, with figures.

    python bench/convergence.py --seeds 20 --steps 60 [--first-seed 1000] [--json]
    python bench/convergence.py --replay failing.json   # a sequence's action list, one per line

Each failing sequence is printed with its seed and actions and saved under --out, so
`--replay` repeats it exactly. Exits 1 when any sequence found a discrepancy.
"""

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.convergence import Outcome, Sequence, convergence_cluster  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--replay", type=Path, help="a file of actions, one JSON object a line")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "convergence")
    parser.add_argument("--json", action="store_true", help="print the totals as one JSON object")
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
