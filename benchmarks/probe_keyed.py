"""Design probe of the keyed benchmark (docs/results.md, "design 1"): how well the teacher reproduces the true
answer distributions, and where pure FKL, pure RKL and α = 0.5 leave a student after one episode's updates.

Not the headroom study: a quick look, on a few seeds, at whether a design has a trade-off worth measuring.
Each seed's student starts from the same state for every weighting. ``--warm N`` first trains it for N steps
of 32 examples on the list tasks and a *different* key layout (``layout_seed + 1``), so it knows the prompt
format and the words but not this layout's valid answers.

    python benchmarks/probe_keyed.py --seeds 300 301 --warm 600 \\
        --set "engine.student.arch={model_type: llama, hidden_size: 16, ...}"
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from arkd_env.assets.build import pretrain
from arkd_env.assets.data import keyed_records, keyed_spec, pad_token_id, tokenize_records
from arkd_env.assets.keyed import keyed_prompts
from arkd_env.config import load_preset
from arkd_env.engine import Distiller
from arkd_env.eval.answers import AnswerSet, answer_scores, as_metrics

WEIGHTINGS = {"fkl": {"fkl": 1.0, "rkl": 0.0}, "rkl": {"fkl": 0.0, "rkl": 1.0}, "α=0.5": {"fkl": 0.5, "rkl": 0.5}}
COLUMNS = ("val_score", "val_validity", "val_head_recall", "val_tail_recall", "val_exact_kl", "exact_match")
WARM_BATCH = 32
WARM_LR = 3e-3
WARM_RECORDS_SEED = 12345  # apart from the data's split seed and the teacher's seed


def _warm_examples(distiller: Distiller, steps: int) -> list:
    data = distiller.cfg.data
    other = dataclasses.replace(data, keyed=dataclasses.replace(data.keyed, layout_seed=data.keyed.layout_seed + 1,
                                                                deterministic_share=0.5))
    examples, _ = tokenize_records(keyed_records(other, steps * WARM_BATCH, WARM_RECORDS_SEED),
                                   distiller.tokenizer, data)
    return examples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="keyed")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="engine.KEY=VALUE")
    parser.add_argument("--seeds", type=int, nargs="+", default=[300, 301])
    parser.add_argument("--warm", type=int, default=0, help="warm-start steps (0: a random student)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    cfg = load_preset(args.preset, args.overrides).engine
    distiller = Distiller.from_config(cfg)
    answers = AnswerSet.build(keyed_prompts(keyed_spec(cfg.data)), distiller.tokenizer, cfg.data,
                              cfg.eval_batch_size)
    teacher = as_metrics(answer_scores(distiller.teacher, answers, distiller.vocab_size, distiller.device))
    print(f"built in {time.perf_counter() - start:.0f} s; teacher: "
          + ", ".join(f"{k} {v:.3f}" for k, v in teacher.items()), flush=True)
    warm = _warm_examples(distiller, args.warm) if args.warm else []
    print("| seed | policy | " + " | ".join(COLUMNS) + " | s |", flush=True)
    print("|" + "---|" * (len(COLUMNS) + 3), flush=True)
    for seed in args.seeds:
        distiller.restore(distiller.initial_state(seed))
        if warm:
            pretrain(distiller.student, warm, pad_token_id(distiller.tokenizer), args.warm, WARM_LR, WARM_BATCH,
                     distiller.device, seed)
            distiller.student.train()
        initial = distiller.snapshot()
        for name, weights in {"start": None, **WEIGHTINGS}.items():
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
