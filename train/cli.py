"""The `arkd` command: prepare · train · distill · evaluate · compare · demo.

Every user error (unknown preset, algorithm or policy; missing file; bad override; a policy that does not
fit the env's spaces; a failed write such as a full disk) ends with one line on stderr and exit status 2,
and a failed command removes the run folder it made unless that holds a checkpoint; ``--debug`` shows the
traceback instead. Ctrl-C during `arkd train` saves a checkpoint and exits with 130.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from arkd_env import ARKDWarning
from arkd_env.config import (
    DEFAULT_PRESET,
    ConfigError,
    apply_overrides,
    check_seeds,
    deep_merge,
    parse_overrides,
    read_yaml,
)
from arkd_env.progress import say
from train.config import SECTIONS, RunConfig, build, load_run_config, own_sources, replace
from train.errors import Interrupted, UserError
from train.runs import removed_on_error

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


# The demo's comparison plays this many held-out seeds: on the blind default each costs 5 runs of about 24 s
# on 2 cores, and all 5 of run.eval_seeds would take the demo past 10 minutes.
DEMO_SEEDS = 2


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other ARKD error."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_USER_ERROR)


def _common(parser: argparse.ArgumentParser, output: bool = True) -> None:
    parser.add_argument("--preset", default=None, help="preset in arkd_env/configs (default: "
                        f"{DEFAULT_PRESET}, the blind keyed benchmark, or the preset named in --config)")
    parser.add_argument("--config", default=None, metavar="FILE", help="YAML file merged over the preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set engine.lr=1e-3 (repeatable)")
    parser.add_argument("--teacher", default=None, metavar="MODEL", help="teacher: a hub name or local folder, "
                        "replacing the preset's engine.teacher (its tokenizer is used)")
    parser.add_argument("--student", default=None, metavar="MODEL", help="student: a hub name or local folder, "
                        "replacing the preset's engine.student")
    parser.add_argument("--data", default=None, metavar="SOURCE", help="data: a local file or hub data set of "
                        "messages, prompt/completion or instruction rows, replacing the preset's engine.data")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    if output:
        parser.add_argument("--output-dir", default=None, metavar="DIR",
                            help="folder of run folders (default: run.output_dir, 'runs')")


def _command(sub: Any, name: str, summary: str, example: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=summary, epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="arkd", description="ARKD: learn when to use forward or reverse KL in LLM "
                     "distillation.", epilog="example:\n  arkd demo --preset nano\n\nrun `arkd COMMAND --help` "
                     "for each command", formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = _command(sub, "prepare", "Build and cache what a preset needs offline (tokenizer, trained teacher).",
                 "arkd prepare --preset nano")
    _common(p, output=False)
    p.add_argument("--force", action="store_true", help="rebuild even when cached")

    p = _command(sub, "train", "Learn a weighting policy with an RL agent; writes a run folder "
                 "(config, TensorBoard events, checkpoints, policy.zip, metrics.json, plots).",
                 "arkd train --algo ppo --preset nano --timesteps 64 --seed 1")
    _common(p)
    p.add_argument("--algo", default=None, help="agent: ppo, a2c, sac, td3, ddpg, tqc, trpo, recurrent_ppo "
                   "(ppo_lstm), reinforce, dqn, qrdqn or package.module:Class")
    p.add_argument("--timesteps", type=int, default=None, help="env steps to learn for (run.timesteps)")
    p.add_argument("--seed", type=int, default=None, help="agent seed (run.seed)")
    p.add_argument("--name", default=None, help="run folder name instead of <preset>__<algo>__<seed>__<time>")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="env steps between checkpoints, rounded up to whole episodes")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue RUN_DIR from its latest complete checkpoint (only --timesteps may change)")
    p.add_argument("--n-envs", type=int, default=None, help="parallel envs (SubprocVecEnv when > 1)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run envs as Ray actors: local Ray, or the cluster at ADDRESS")
    p.add_argument("--gpus-per-env", type=float, default=None, help="GPUs per Ray env actor (fractions ok)")

    p = _command(sub, "distill", "One full distillation run driven by a policy, or (--online ALGO) by an agent "
                 "that learns the weighting during the run; saves the student as a Hugging Face folder plus "
                 "metrics.json.",
                 "arkd distill --policy linear:1->0 --preset nano   (or fkl, rkl, akl, greedy, fixed:0.3, "
                 "RUN_DIR/policy.zip)\n  arkd distill --online ppo --preset nano   (or sac, reinforce, prototype; "
                 "bandit with --set env.action_mode=grid)\n  arkd distill --resume RUN_DIR   (an online run "
                 "killed or stopped)")
    _common(p)
    p.add_argument("--policy", default=None, help="fkl | rkl | akl | sft | greedy | cosine | fixed:A | "
                   "linear:A->B | RUN_DIR | RUN_DIR/policy.zip")
    p.add_argument("--online", default=None, metavar="ALGO", help="ppo | sac | reinforce | bandit | prototype: "
                   "an agent that learns the weighting inside this one run (settings under online.*)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the online run in RUN_DIR from its latest checkpoint, with its saved config")
    p.add_argument("--seed", type=int, default=None, help="engine seed: student init and data order "
                   "(engine.seed)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: a new run folder)")

    p = _command(sub, "evaluate", "Evaluate a saved student against the preset's teacher and validation set, "
                 "or (--suite paper) students on the five sets of the MiniLLM/DistiLLM protocol.",
                 "arkd evaluate runs/nano__distill-fkl__0__20250101-120000/student --preset nano\n"
                 "  arkd evaluate runs/A/student runs/B/student --preset gpt2-dolly --suite paper --suite-dir data")
    _common(p, output=False)
    p.add_argument("student_dirs", nargs="+", metavar="STUDENT_DIR", help="Hugging Face folder of the student "
                   "(several with --suite)")
    p.add_argument("--out", default=None, metavar="FILE", help="metrics JSON (default: "
                   "STUDENT_DIR/../evaluation.json; with --suite STUDENT_DIR/../suite_paper.json, or "
                   "./suite_paper.json for several students; the table goes beside it as .md)")
    p.add_argument("--suite", default=None, choices=("paper",), help="run the paper-protocol suite: DollyEval, "
                   "SelfInst, VicunaEval, S-NI, UnNI; ROUGE-L mean (std) over generation seeds")
    p.add_argument("--suite-dir", default=None, metavar="DIR", help="folder holding the five sets "
                   "(eval_suite.dir; MiniLLM layout, e.g. DIR/dolly/valid.jsonl)")
    p.add_argument("--seeds", default=None, metavar="S1,S2,...", help="generation seeds of the suite "
                   "(eval_suite.seeds; default 10,20,30,40,50)")

    p = _command(sub, "compare", "Run several policies on the same engine seeds; write a mean ± std table "
                 "(Markdown, CSV, JSON) with the best per column marked, plus plots.",
                 "arkd compare --policies fkl,rkl,akl,greedy,runs/RUN/policy.zip --seeds 3 --preset nano")
    _common(p)
    p.add_argument("--policies", required=True, help="comma-separated policy specs (as for distill)")
    p.add_argument("--seeds", default=None, help="a count N (the first N of run.eval_seeds, or 100.. when "
                   "more) or a comma-separated list of engine seeds")

    p = _command(sub, "demo", "Prepare, learn a PPO policy on a short budget, compare it with the preset's "
                 "policies (run.policies) on held-out seeds (and test instances, with an instance set), print the "
                 "table and where the logs and plots are.",
                 "arkd demo            (the blind benchmark, the embedded default; under 10 minutes)")
    _common(p)
    p.add_argument("--timesteps", type=int, default=None, help="PPO budget in env steps (run.timesteps)")
    p.add_argument("--seeds", default=None, help="held-out seeds of the comparison, as for compare (default: "
                   f"the first {DEMO_SEEDS} of run.eval_seeds, to stay inside 10 minutes; `arkd compare` plays "
                   "them all)")

    p = _command(sub, "config", "List every config key with its value (the preset's, after --config and --set) "
                 "and its help.", "arkd config --list --preset nano")
    _common(p, output=False)
    p.add_argument("--list", action="store_true", help="list every key (the default)")
    return parser


# ---------------------------------------------------------------------------------------------- config
def _own_sources(args: argparse.Namespace) -> dict[str, Any]:
    return own_sources(args.teacher, args.student, args.data)


def _config(args: argparse.Namespace, **sections: dict[str, Any]) -> RunConfig:
    cfg = load_run_config(args.preset, args.config, args.overrides, _own_sources(args))
    changes = {k: {f: v for f, v in values.items() if v is not None} for k, values in sections.items()}
    if getattr(args, "output_dir", None) is not None:
        changes.setdefault("run", {})["output_dir"] = args.output_dir
    changes = {k: v for k, v in changes.items() if v}
    if changes:
        try:
            cfg = replace(cfg, **changes)
        except ConfigError as err:
            raise ConfigError(f"command line: {err}") from None
    return cfg


def _dry_run(cfg: RunConfig) -> int:
    print(cfg.to_yaml(), end="")
    return 0


def _quiet_libraries() -> None:
    """Keep stderr for ARKD's own messages and progress bars."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


MAX_SEEDS = 10_000  # engine seeds one comparison may play


def _seed_list(text: str | None, cfg: RunConfig) -> list[int]:
    if text is None:
        return list(cfg.run.eval_seeds)
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            count = int(text)
            if not 1 <= count <= MAX_SEEDS:
                raise UserError(f"--seeds {text}: a count of seeds must lie in [1, {MAX_SEEDS}]")
            base = list(cfg.run.eval_seeds)
            seeds = base[:count] + [max(base) + 1 + i for i in range(max(0, count - len(base)))]
    except ValueError:
        raise UserError(f"--seeds {text!r}: expected a count or comma-separated integers") from None
    if len(set(seeds)) != len(seeds) or not seeds:
        raise UserError(f"--seeds {text!r}: seeds must be distinct and at least one")
    check_seeds("--seeds", seeds)
    trained = sorted(set(seeds) & set(cfg.env.train_seeds))
    if trained:
        raise UserError(f"--seeds: seed {trained[0]} is in env.train_seeds, the seeds agents train on; compare "
                        f"on held-out seeds (run.eval_seeds: {list(cfg.run.eval_seeds)})")
    return seeds


# ---------------------------------------------------------------------------------------------- commands
def cmd_prepare(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if args.dry_run:
        return _dry_run(cfg)
    from arkd_env.assets.build import prepare

    say(f"preparing preset {cfg.preset!r} (cached under $ARKD_CACHE_DIR or ~/.cache/arkd) ...")
    start = time.perf_counter()
    path = prepare(cfg.engine, force=args.force)
    if path is None:
        say("nothing to build: this preset loads its models and data by name")
    else:
        say(f"ready in {time.perf_counter() - start:.1f}s: {path}")
    return 0


def _train_config(args: argparse.Namespace) -> tuple[RunConfig, Path | None]:
    from train.trainer import load_run

    agent: dict[str, Any] = {"algo": args.algo, "n_envs": args.n_envs, "gpus_per_env": args.gpus_per_env}
    if args.ray is not None:
        agent["vec_env"] = "ray"
        agent["ray_address"] = None if args.ray == "local" else args.ray
    run = {"timesteps": args.timesteps, "seed": args.seed, "checkpoint_every": args.checkpoint_every}
    if args.resume is None:
        return _config(args, agent=agent, run=run), None
    run_dir = Path(args.resume)
    saved = load_run(run_dir)
    if args.name is not None and args.name != run_dir.name:
        raise UserError(f"--name {args.name!r}: the resumed run is {run_dir.name!r}")
    # The flags of the original command may be given again, layered over the saved config (a flag left out means
    # "as saved"); any that would change it is refused. --output-dir does not matter: the run folder is given.
    values = {**saved.to_dict(), "preset": args.preset or saved.preset}
    if args.config is not None:
        values = deep_merge(values, read_yaml(args.config))
    values = apply_overrides(values, {**_own_sources(args),
                                      **parse_overrides(args.overrides, ("preset", *SECTIONS))})
    given = {section: {k: v for k, v in flags.items() if v is not None}
             for section, flags in (("agent", agent), ("run", run))}
    requested = replace(build(values, "command line"), **{k: v for k, v in given.items() if v})
    for key, old, new in _differences(saved.to_dict(), requested.to_dict()):
        if key != "run.timesteps":
            raise UserError(f"--resume continues {run_dir} with its saved config; {key} would change from "
                            f"{old!r} to {new!r} (only --timesteps may change)")
    return requested, run_dir


def _differences(old: Any, new: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every leaf where two nested mappings differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            yield from _differences(old.get(key), new.get(key), f"{prefix}{key}.")
    elif old != new:
        yield prefix.rstrip("."), old, new


def cmd_train(args: argparse.Namespace) -> int:
    from train import runs, trainer

    cfg, run_dir = _train_config(args)
    if args.dry_run:
        return _dry_run(cfg)
    trainer.check_algo(cfg)
    if run_dir is None:
        run_dir = runs.create_run_dir(cfg.run.output_dir, cfg.preset, cfg.agent.algo, cfg.run.seed,
                                      name=args.name)
        say(f"run folder: {run_dir}")
    else:
        say(f"resuming {run_dir}")
    _quiet_libraries()
    result = trainer.train(cfg, run_dir, resume=args.resume is not None)
    final = result.metrics.get("final_episode", {})
    say(f"learned for {result.num_timesteps} env steps; policy: {run_dir / runs.POLICY_FILE}")
    if final:
        say(f"final episode return {final.get('episode_return', float('nan')):.4f}, val_divergence "
            f"{final.get('val_divergence', float('nan')):.4f}")
    say(f"TensorBoard: tensorboard --logdir {run_dir / trainer.TB_DIR}    plots: {run_dir / 'plots'}")
    return 0


def _distill_mode(args: argparse.Namespace) -> None:
    """Exactly one of --policy, --online and --resume, each with only the flags it can honour."""
    given = [flag for flag, value in (("--policy", args.policy), ("--online", args.online),
                                      ("--resume", args.resume)) if value is not None]
    if not given:
        raise UserError("give --policy SPEC (a fixed policy or a saved agent), --online ALGO (an agent that "
                        "learns during the run) or --resume RUN_DIR")
    if len(given) > 1:
        raise UserError(f"{given[0]} and {given[1]} cannot be combined: --policy plays a fixed or saved policy, "
                        "--online learns one during the run, --resume continues an online run")
    if args.resume is not None:
        extra = [flag for flag, value in (("--preset", args.preset), ("--config", args.config),
                                          ("--set", args.overrides or None), ("--seed", args.seed),
                                          ("--out", args.out), ("--teacher", args.teacher),
                                          ("--student", args.student), ("--data", args.data),
                                          ("--output-dir", args.output_dir)) if value is not None]
        if extra:
            raise UserError(f"--resume continues {args.resume} with its saved config; {extra[0]} cannot be given")


def _resume_online(args: argparse.Namespace) -> int:
    from train import runs
    from train.online import run_online

    run_dir = runs.require_run_dir(args.resume)
    info = runs.read_json(run_dir / runs.ONLINE_FILE) if (run_dir / runs.ONLINE_FILE).is_file() else None
    if not isinstance(info, dict) or "online" not in info or "seed" not in info:
        raise UserError(f"{run_dir}: not an online distill run (no {runs.ONLINE_FILE})")
    cfg = load_run_config(config_file=run_dir / runs.CONFIG_FILE)
    if args.dry_run:
        return _dry_run(cfg)
    _quiet_libraries()
    say(f"resuming online run {run_dir} ({info['online']}, engine seed {info['seed']}) ...")
    result = run_online(cfg, str(info["online"]), int(info["seed"]), run_dir, resume=True)
    return _distilled(result, run_dir)


def _distilled(result: Any, out: Path) -> int:
    from train import runs
    from train.distill import STUDENT_DIR

    say(_metrics_line({"episode_return": result.episode_return, **result.metrics}))
    say(f"student: {out / STUDENT_DIR}    metrics: {out / runs.METRICS_FILE}")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from train import runs
    from train.distill import distill
    from train.episode import check_spec, label

    _distill_mode(args)
    if args.resume is not None:
        return _resume_online(args)
    cfg = _config(args, engine={"seed": args.seed})
    if args.online is not None:
        from train.online import check_online, online_config

        check_online(cfg, args.online)
        if args.dry_run:
            return _dry_run(online_config(cfg, args.online))  # with the settings the algorithm runs with
        name = f"online-{args.online.strip().lower()}"
    else:
        if args.dry_run:
            return _dry_run(cfg)
        check_spec(args.policy)
        name = f"distill-{label(args.policy)}"
    if args.out:
        runs.require_kind(Path(args.out), "distill", "--out")
        out = runs.make_out_dir(args.out)
    else:
        out = runs.create_run_dir(cfg.run.output_dir, cfg.preset, name, cfg.engine.seed)
    _quiet_libraries()
    if args.online is not None:
        from train.online import run_online

        say(f"distilling online with {args.online} on preset {cfg.preset!r}, engine seed {cfg.engine.seed} ...")
        say(f"  checkpoints: {out / 'checkpoints'}; after a kill: arkd distill --resume {out}")
        return _distilled(run_online(cfg, args.online, cfg.engine.seed, out), out)
    say(f"distilling with policy {args.policy} on preset {cfg.preset!r}, engine seed {cfg.engine.seed} ...")
    return _distilled(distill(cfg, args.policy, cfg.engine.seed, out), out)


def _metrics_line(metrics: dict[str, float]) -> str:
    keys = ("episode_return", "val_divergence", "val_fkl", "val_rkl", "val_ce", "rouge_l", "exact_match")
    return "  ".join(f"{k}={metrics[k]:.4g}" for k in keys if k in metrics)


def _generation_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r}: expected comma-separated integers, e.g. 10,20,30,40,50") from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.suite is not None:
        return _evaluate_suite(args)
    for flag, value in (("--suite-dir", args.suite_dir), ("--seeds", args.seeds)):
        if value is not None:
            raise UserError(f"{flag} belongs to the evaluation suite; add --suite paper")
    if len(args.student_dirs) != 1:
        raise UserError(f"give one STUDENT_DIR (got {len(args.student_dirs)}); several only with --suite paper")
    from train.distill import evaluate_student
    from train.runs import write_json

    cfg = _config(args)
    if args.dry_run:
        return _dry_run(cfg)
    student = Path(args.student_dirs[0])
    _quiet_libraries()
    metrics = evaluate_student(cfg, student)
    out = Path(args.out) if args.out else student.resolve().parent / "evaluation.json"
    write_json(out, {"student": str(student), "preset": cfg.preset, "metrics": metrics})
    say(_metrics_line(metrics))
    say(f"metrics: {out}")
    return 0


def _evaluate_suite(args: argparse.Namespace) -> int:
    from train.suite import evaluate_suite

    cfg = _config(args, eval_suite={"dir": args.suite_dir, "seeds": _generation_seeds(args.seeds)})
    if args.dry_run:
        return _dry_run(cfg)
    students = [Path(d) for d in args.student_dirs]
    if args.out:
        out = Path(args.out)
    elif len(students) == 1:
        out = students[0].resolve().parent / "suite_paper.json"
    else:
        out = Path("suite_paper.json")
    _quiet_libraries()
    say(f"evaluating {len(students)} student(s) on {', '.join(cfg.eval_suite.sets)} with generation seeds "
        f"{cfg.eval_suite.seeds} ...")
    results = evaluate_suite(cfg, students, out)
    from arkd_env.eval.suite import markdown

    print(markdown(results))
    say(f"scores: {out}    table: {out.with_suffix('.md')}    texts: {out.parent / (out.stem + '_generations')}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from train import runs
    from train.compare import run_compare
    from train.episode import check_spec

    cfg = _config(args)
    specs = [s.strip() for s in args.policies.split(",") if s.strip()]
    if not specs:
        raise UserError("--policies: give at least one policy")
    seeds = _seed_list(args.seeds, cfg)
    if args.dry_run:
        return _dry_run(cfg)
    for spec in specs:
        check_spec(spec)
    out = runs.create_run_dir(cfg.run.output_dir, "compare", cfg.preset, len(seeds))
    _quiet_libraries()
    say(f"comparing {len(specs)} policies on engine seeds {seeds}; results in {out}")
    comparison = run_compare(cfg, specs, seeds, out)
    print(comparison.table.headline())
    say(f"table: {out / 'table.md'} (.csv, .json)    plots: {out / 'plots'}    "
        f"TensorBoard: tensorboard --logdir {out / 'tb'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from arkd_env.assets.build import prepare
    from train import compare, plots, runs, trainer

    cfg = _config(args, agent={"algo": "ppo"}, run={"timesteps": args.timesteps})
    seeds = _seed_list(args.seeds, cfg) if args.seeds else list(cfg.run.eval_seeds[:DEMO_SEEDS])
    # The learning curve's references are played below on fewer seeds than `arkd train` would play them.
    curve_references = cfg.run.reference_policies
    cfg = replace(cfg, run={"final_eval": False, "reference_policies": []})
    if args.dry_run:
        print(f"# arkd demo compares on held-out seeds {seeds}")  # a YAML comment: the output stays a config
        return _dry_run(cfg)
    trainer.check_algo(cfg)
    for spec in cfg.run.policies:
        from train.episode import check_spec

        check_spec(spec)
    _quiet_libraries()
    start = time.perf_counter()
    say(f"[1/3] preparing preset {cfg.preset!r} ...")
    prepare(cfg.engine)
    run_dir = runs.create_run_dir(cfg.run.output_dir, cfg.preset, "ppo", cfg.run.seed)
    say(f"[2/3] learning a PPO weighting policy for {cfg.run.timesteps} env steps in {run_dir} ...")
    trainer.train(cfg, run_dir, evaluate=False)
    specs = [str(run_dir / runs.POLICY_FILE), *cfg.run.policies]
    say(f"[3/3] comparing the learned policy with {', '.join(cfg.run.policies)} on held-out seeds {seeds} ...")
    names = [f"{cfg.agent.algo} (learned)", *compare.unique_labels(cfg.run.policies)]
    comparison = compare.run_compare(cfg, specs, seeds, run_dir / "compare", names=names, references=names[1:])
    from train.callbacks import read_learning_curve

    # The agent's curve is of its training seeds, so its reference lines are played there too (the reference
    # policies only, as `arkd train` draws them, to keep the demo inside its time).
    say(f"playing {', '.join(curve_references)} on training seed(s) "
        f"{trainer.reference_seeds(cfg, trainer.DEMO_REFERENCE_SEEDS)} for the learning curve ...")
    played = trainer.play_references(cfg, curve_references, trainer.DEMO_REFERENCE_SEEDS)
    references = trainer.returns_of(played)
    plots.learning_curve(read_learning_curve(run_dir), references, run_dir / "plots" / "learning_curve.png")
    # The policies' runs are in compare/tb, under the same --logdir; the training run gets the table beside it.
    compare.write_table_text(comparison.table, run_dir / trainer.TB_DIR)
    runs.write_json(run_dir / runs.METRICS_FILE, {"table": comparison.table.to_json(),
                                                  "wall_s": time.perf_counter() - start})
    print(comparison.table.headline())
    say(f"done in {time.perf_counter() - start:.0f}s")
    say(f"table: {run_dir / 'compare' / 'table.md'}   plots: {run_dir / 'plots'} and {run_dir / 'compare' / 'plots'}")
    say(f"TensorBoard: tensorboard --logdir {run_dir}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from train.config import described_fields

    cfg = _config(args)
    if args.dry_run:
        return _dry_run(cfg)
    for key, value, text in described_fields(cfg):
        print(f"{key} = {json.dumps(value)}\n    {text}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "prepare": cmd_prepare, "train": cmd_train, "distill": cmd_distill, "evaluate": cmd_evaluate,
    "compare": cmd_compare, "demo": cmd_demo, "config": cmd_config,
}


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, OSError) and err.filename and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    return text


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _configure_warnings(debug: bool) -> None:
    """Without --debug the libraries' warnings are silenced; ARKD's own (ActorRestartWarning, ...) still show."""
    if not debug:
        warnings.filterwarnings("ignore")
        warnings.filterwarnings("default", category=ARKDWarning)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    _configure_warnings(args.debug)
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        with removed_on_error():  # a failed command leaves no half-made run folder behind
            return COMMANDS[args.command](args)
    except Interrupted as err:
        print(f"arkd {args.command}: {err}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"arkd {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UserError, ConfigError, ValueError, OSError, ImportError) as err:
        if args.debug:
            raise
        print(f"arkd {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        signal.signal(signal.SIGTERM, previous)
