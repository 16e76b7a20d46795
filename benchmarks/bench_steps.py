"""What choosing α buys at each step of a run, and whether the lookahead features foresee it.

    python benchmarks/bench_steps.py [--preset embedded] [--seeds 0,1,...,9] [--out FILE.jsonl]

On training seeds only (never the evaluation seeds), it walks greedy's trajectory: at every step it runs one
step's updates with each candidate α from the same state on the same batches (`DistillEnv.lookahead`, each
undone), records the reward's metric after each together with the observation (probe features included), and
then takes the best candidate, as `greedy` does. One JSON row per step is appended to `--out`; seeds already
there are skipped, so an interrupted run resumes. The report (printed, and written beside `--out` as .md) gives:

- per step, each α's mean excess over that step's best candidate: what a per-step choice can buy, and when;
- how often the 4-update probe `probe_gap` has the sign of the full-step FKL-against-RKL difference, and how
  well it correlates with it: whether the probe features foresee what a step will do.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from arkd_env.env import FEATURES, DistillEnv

CANDIDATES = (0.0, 0.25, 0.5, 0.75, 1.0)  # greedy's


def collect(env: DistillEnv, seed: int) -> list[dict[str, Any]]:
    """One greedy episode on engine seed ``seed``, with every candidate's one-step outcome at every step."""
    rows = []
    obs, _ = env.reset(seed=seed, options={"engine_seed": seed})
    for t in range(env.config.horizon):
        state = env.distiller.snapshot()
        scores = {alpha: env.lookahead({"fkl": alpha, "rkl": 1.0 - alpha}, state=state) for alpha in CANDIDATES}
        best = min(scores, key=lambda alpha: scores[alpha])
        rows.append({"seed": seed, "t": t, "obs": dict(zip(env.feature_names, map(float, obs), strict=True)),
                     "scores": {str(a): v for a, v in scores.items()}, "best": best})
        obs, *_ = env.step(env.weights_to_action({"fkl": best, "rkl": 1.0 - best}))
    return rows


def report(rows: list[dict[str, Any]]) -> str:
    alphas = [str(a) for a in CANDIDATES]
    lines = [f"{len(rows)} steps on engine seeds {sorted({r['seed'] for r in rows})}", "",
             "Mean excess of the reward's metric over the step's best candidate (0 = always the best):", "",
             "| step | " + " | ".join(f"α={a}" for a in alphas) + " | greedy's picks |",
             "|---|" + "---|" * (len(alphas) + 1)]
    for t in sorted({r["t"] for r in rows}):
        at = [r for r in rows if r["t"] == t]
        excess = [np.mean([r["scores"][a] - min(r["scores"].values()) for r in at]) for a in alphas]
        picks = " ".join(f"{r['best']:g}" for r in at)
        lines.append(f"| {t + 1} | " + " | ".join(f"{e:.3f}" for e in excess) + f" | {picks} |")
    # probe_gap > 0 when 4 updates of FKL gain more than 4 of RKL; full > 0 when a full FKL step ends lower.
    probe = np.array([r["obs"]["probe_gap"] for r in rows])
    full = np.array([r["scores"]["1.0"] - r["scores"]["0.0"] for r in rows]) * -1.0
    later = np.array([r["t"] > 0 for r in rows])
    lines += ["", "`probe_gap` (4 updates) against the full step's FKL-minus-RKL gain:", "",
              "| steps | same sign | always guessing the commoner sign | correlation |", "|---|---|---|---|"]
    for label, mask in (("all", np.ones_like(later)), ("2 and later", later)):
        same = float(np.mean(np.sign(probe[mask]) == np.sign(full[mask])))
        common = max(float(np.mean(full[mask] > 0)), float(np.mean(full[mask] < 0)))
        correlation = np.corrcoef(probe[mask], full[mask])[0, 1]
        lines.append(f"| {label} | {same:.2f} | {common:.2f} | {correlation:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="embedded")
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9", help="training seeds, comma-separated")
    parser.add_argument("--out", type=Path, default=None,
                        help="rows file (default benchmarks/results/steps_<preset>.jsonl)")
    args = parser.parse_args()
    out: Path = args.out or Path(__file__).parent / "results" / f"steps_{args.preset}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    done = {r["seed"] for r in rows}
    env = DistillEnv(preset=args.preset, features=list(FEATURES))
    for seed in (int(s) for s in args.seeds.split(",")):
        if seed in done:
            continue
        episode = collect(env, seed)
        with out.open("a") as handle:  # whole episodes only, so a kill never leaves half a seed behind
            handle.write("".join(json.dumps(r) + "\n" for r in episode))
        rows += episode
        print(f"seed {seed}: final {episode[-1]['scores'][str(episode[-1]['best'])]:.4f}", flush=True)
    text = report(rows)
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
