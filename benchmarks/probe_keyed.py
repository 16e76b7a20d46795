"""Design probe of the keyed benchmark (docs/results.md, "design 1"): how well the teacher reproduces the true
answer distributions, and where constant weightings (by default pure FKL, pure RKL and α = 0.5) leave a
student after one episode's updates.

Not the headroom study: a quick look, on a few seeds, at whether a design has a trade-off worth measuring.
Each seed's student (warm-started when the preset says so, ``engine.student.pretrain_steps``) starts from the
same state for every weighting.

    python benchmarks/probe_keyed.py --seeds 300 301 --set engine.student.pretrain_steps=0
"""

from __future__ import annotations

import argparse
import time

from arkd_env.assets.data import keyed_spec
from arkd_env.assets.keyed import keyed_prompts
from arkd_env.config import load_preset
from arkd_env.engine import Distiller
from arkd_env.eval.answers import AnswerSet, answer_scores, as_metrics

COLUMNS = ("val_score", "val_validity", "val_head_recall", "val_tail_recall", "val_exact_kl", "exact_match")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="keyed")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="engine.KEY=VALUE")
    parser.add_argument("--seeds", type=int, nargs="+", default=[300, 301])
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.0, 0.0, 0.5],
                        help="constant FKL shares α to train with (α·FKL + (1-α)·RKL)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    cfg = load_preset(args.preset, args.overrides).engine
    distiller = Distiller.from_config(cfg)
    answers = AnswerSet.build(keyed_prompts(keyed_spec(cfg.data)), distiller.tokenizer, cfg.data,
                              cfg.eval_batch_size)
    teacher = as_metrics(answer_scores(distiller.teacher, answers, distiller.vocab_size, distiller.device))
    print(f"built in {time.perf_counter() - start:.0f} s; teacher: "
          + ", ".join(f"{k} {v:.3f}" for k, v in teacher.items()), flush=True)
    print("| seed | policy | " + " | ".join(COLUMNS) + " | s |", flush=True)
    print("|" + "---|" * (len(COLUMNS) + 3), flush=True)
    for seed in args.seeds:
        initial = distiller.initial_state(seed)
        weightings = {f"α={a:g}": {"fkl": a, "rkl": 1.0 - a} for a in args.alphas}
        for name, weights in {"start": None, **weightings}.items():
            distiller.restore(initial)
            began = time.perf_counter()
            if weights is not None:
                distiller.train_steps(weights, cfg.total_updates)
            metrics = distiller.evaluate(generate=True)
            cells = [f"{metrics[c]:.3f}" if c in metrics else "–" for c in COLUMNS]
            print(f"| {seed} | {name} | " + " | ".join(cells) + f" | {time.perf_counter() - began:.0f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
