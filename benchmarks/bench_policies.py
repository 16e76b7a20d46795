"""Regenerate the old default's tables (docs/results/history.md): learned policies against fixed and heuristic ones.

    python benchmarks/bench_policies.py [--preset embedded] [--timesteps 720] [--seeds 100,101,102,103,104]

Runs, with the real `arkd` command and in this order:

1. `arkd prepare` (the preset's teacher, cached);
2. `arkd train` once per learned agent (`AGENTS`: PPO, SAC, SAC observing lookahead probes, and PPO choosing
   among five or four α under six settings, the last observing full-step probes) and agent seed
   (`--agent-seeds`, or an agent's own after an `@`: `ppo-grid-relative-g0-ent@0/1/2`), side by side; every
   episode draws its engine seed from the preset's `env.train_seeds`, which must not hold an evaluation seed;
3. `arkd compare` of the learned policies and the baselines on the evaluation seeds, in `--workers`
   processes; the final students are scored on held-out examples (`test_*`) as well.

Everything goes to `--work` (default a fresh `runs/results/<time>`); the generated report
(`--report`, default `docs/results/generated.md`) holds the exact commands, the resolved config of the
comparison, the comparison tables with bootstrap intervals and copies of the plots beside it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from arkd_env.atomic import atomic_write_text
from train.config import load_run_config

REPO = Path(__file__).resolve().parent.parent
BASELINES = ("fkl", "rkl", "fixed:0.5", "akl", "greedy")
# The default features plus the lookahead ones (arkd_env.env.PROBE_FEATURES).
PROBE_OBSERVATION = ("[progress, fkl, rkl, akl_head_ratio, akl_tail_ratio, teacher_entropy, student_entropy, "
                     "top1_agreement, student_ce, grad_norm, val_metric, val_delta, probe_gap, probe_gain]")
# PPO choosing among greedy's five α (action_mode grid), rewarded against α = 0.5 from the same state
# (reward relative), with larger policy steps: 720 env steps are only 45 PPO updates (docs/results/history.md).
GRID_PPO = ["env.action_mode=grid", "agent.hparams.learning_rate=0.001", "agent.hparams.n_epochs=8"]
# name -> (algorithm, config overrides of its `arkd train`)
AGENTS: dict[str, tuple[str, list[str]]] = {
    "ppo": ("ppo", []),
    "sac": ("sac", []),
    "sac-probe": ("sac", [f"env.features={PROBE_OBSERVATION}"]),
    "ppo-grid": ("ppo", GRID_PPO),
    "ppo-grid-relative": ("ppo", [*GRID_PPO, "env.reward=relative", "env.normalize_reward=true"]),
    # γ = 0: each action is credited with its own step's gain over α = 0.5, as greedy's lookahead credits it.
    "ppo-grid-relative-g0": ("ppo", [*GRID_PPO, "env.reward=relative", "env.normalize_reward=true",
                                     "agent.hparams.gamma=0.0"]),
    # The same with a stronger entropy bonus: the step that matters comes once an episode, and with the default
    # 0.01 the policy stops trying it before it has learned it.
    "ppo-grid-relative-g0-ent": ("ppo", [*GRID_PPO, "env.reward=relative", "env.normalize_reward=true",
                                         "agent.hparams.gamma=0.0", "agent.hparams.ent_coef=0.05"]),
    # The same without α = 0.5 among the choices: the reference is then no action, so no action is rewarded a
    # certain 0 for the policy to settle on (agent seed 2 of the five-α agent did).
    "ppo-grid4-relative-g0-ent": ("ppo", [*GRID_PPO, "env.alpha_grid=[0.0,0.25,0.75,1.0]", "env.reward=relative",
                                          "env.normalize_reward=true", "agent.hparams.gamma=0.0",
                                          "agent.hparams.ent_coef=0.05"]),
    # The four-α agent that also observes which of pure FKL and pure RKL would gain more over the whole coming
    # step (probes of a full step's updates on its batches, undone; FULL_STEP_PROBES): the per-seed information
    # greedy acts on, at 3× the updates of a plain run where greedy takes 6×.
    "ppo-grid4-probe-relative-g0-ent": ("ppo", [*GRID_PPO, "env.alpha_grid=[0.0,0.25,0.75,1.0]",
                                                f"env.features={PROBE_OBSERVATION}", "env.reward=relative",
                                                "env.normalize_reward=true", "agent.hparams.gamma=0.0",
                                                "agent.hparams.ent_coef=0.05"]),
}
# Agents whose probes span one whole env step of the preset they run on (env.probe_updates = updates_per_step).
FULL_STEP_PROBES = {"ppo-grid4-probe-relative-g0-ent"}


def agent_overrides(agent: str, preset: str, common: list[str]) -> list[str]:
    """The config overrides of ``agent``'s `arkd train` on ``preset`` (after the ``common`` overrides)."""
    own = AGENTS[agent][1]
    if agent not in FULL_STEP_PROBES:
        return own
    step = load_run_config(preset, overrides=[*common, *own]).env.updates_per_step
    return [*own, f"env.probe_updates={step}"]


def _seed_list(text: str, where: str, separator: str) -> list[int]:
    seeds = text.split(separator)
    if not all(seed.strip().isdigit() for seed in seeds):
        raise ValueError(f"{where}: expected whole numbers separated by {separator!r}, got {text!r}")
    return [int(seed) for seed in seeds]


def agent_runs(agents: str, agent_seeds: str) -> list[tuple[str, int]]:
    """(agent, agent seed) pairs to train: every agent of ``agents`` (comma-separated) once per seed of
    ``agent_seeds``, or per the seeds after its ``@`` (``ppo-grid-relative-g0-ent@0/1/2``)."""
    default = _seed_list(agent_seeds, "--agent-seeds", ",")
    runs = []
    for entry in agents.split(","):
        agent, _, own = entry.strip().partition("@")
        if agent not in AGENTS:
            raise ValueError(f"--agents: unknown agent {agent!r} (known: {', '.join(AGENTS)})")
        runs += [(agent, seed) for seed in (_seed_list(own, f"--agents {entry}", "/") if own else default)]
    return runs


def run(command: list[str], log: list[str]) -> str:
    """Run one `arkd` command, echo it, record it for the report and return its stdout."""
    shown = " ".join(shlex.quote(part) for part in command)
    print(f"$ {shown}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {shown}")
    log.append(f"{shown}    # {time.perf_counter() - start:.0f} s")
    return done.stdout


def run_side_by_side(commands: list[list[str]], workers: int, log: list[str]) -> None:
    """Run independent `arkd` commands at once, each with its share of the cores as torch threads."""
    threads = max(1, (os.cpu_count() or 1) // max(1, min(workers, len(commands))))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for start in range(0, len(commands), max(1, workers)):
        batch = commands[start:start + max(1, workers)]
        began = time.perf_counter()
        for command in batch:
            print("$ " + " ".join(shlex.quote(part) for part in command), flush=True)
        running = [subprocess.Popen(c, cwd=REPO, stdout=subprocess.DEVNULL, env=env) for c in batch]
        codes = [p.wait() for p in running]
        for command, code in zip(batch, codes, strict=True):
            shown = " ".join(shlex.quote(part) for part in command)
            if code != 0:
                sys.exit(f"failed ({code}): {shown}")
            log.append(f"OMP_NUM_THREADS={threads} {shown}    # side by side, {time.perf_counter() - began:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="embedded")
    parser.add_argument("--agents", default=",".join(AGENTS),
                        help=f"learned agents, comma-separated, each optionally with its own agent seeds after @ "
                             f"(ppo,sac@0/1): {list(AGENTS)}")
    parser.add_argument("--timesteps", type=int, default=720, help="env steps each agent learns for")
    parser.add_argument("--agent-seeds", default="0",
                        help="agent seeds, comma-separated: each agent trains once per seed, into learned-<agent> "
                             "for seed 0 and learned-<agent>-s<seed> otherwise, to show how reliably it learns")
    parser.add_argument("--seeds", default="100,101,102,103,104", help="evaluation engine seeds")
    parser.add_argument("--baselines", default=",".join(BASELINES))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override passed to every command (as `arkd --set`)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes sharing the cores: agents train side by side, compare plays runs in parallel")
    parser.add_argument("--work", default=None,
                        help="folder for the run folders (default runs/results/<time>); learned-<agent> folders that "
                             "already hold a policy.zip there are compared as they are, not trained again")
    parser.add_argument("--report", default="docs/results/generated.md")
    args = parser.parse_args()

    common = ["--preset", args.preset, *(f"--set={o}" for o in args.overrides)]
    arkd = [sys.executable, "-m", "train"]
    work = Path(args.work).resolve() if args.work else REPO / "runs" / "results" / time.strftime("%Y%m%d-%H%M%S")
    log: list[str] = []
    try:
        runs = agent_runs(args.agents, args.agent_seeds)
    except ValueError as error:
        sys.exit(str(error))
    run([*arkd, "prepare", *common], log)
    learned = [work / (f"learned-{agent}" if seed == 0 else f"learned-{agent}-s{seed}") for agent, seed in runs]
    trainings = [[*arkd, "train", *common, "--algo", AGENTS[agent][0],
                  *(f"--set={o}" for o in agent_overrides(agent, args.preset, args.overrides)),
                  "--timesteps", str(args.timesteps), "--seed", str(seed), "--name", folder.name,
                  "--output-dir", str(work)]
                 for (agent, seed), folder in zip(runs, learned, strict=True) if not (folder / "policy.zip").is_file()]
    if len(trainings) < len(learned):
        log.append(f"# already trained in --work, reused as found: "
                   f"{', '.join(f.name for f in learned if (f / 'policy.zip').is_file())}")
    run_side_by_side(trainings, args.workers, log)
    policies = ",".join([*map(str, learned), args.baselines])
    # Every baseline is a reference, so each learned policy gets a paired difference against each of them.
    references = ", ".join(f'"{b}"' for b in args.baselines.split(","))
    compare = [*arkd, "compare", *common, "--policies", policies, "--seeds", args.seeds, "--output-dir", str(work),
               f"--set=run.reference_policies=[{references}]", f"--set=run.workers={args.workers}"]
    resolved = run([*compare, "--dry-run"], [])
    before = set(work.glob("compare*"))
    run(compare, log)
    [out] = set(work.glob("compare*")) - before

    report = REPO / args.report
    report.parent.mkdir(parents=True, exist_ok=True)
    copied = []  # only this run's plots: the folder also holds the hand-written rounds' figures
    for png in sorted((out / "plots").glob("*.png")):
        copied.append(png.name)
        shutil.copyfile(png, report.parent / png.name)
    for folder in learned:
        curve = folder / "plots" / "learning_curve.png"
        if curve.is_file():
            copied.append(f"learning_curve_{folder.name.removeprefix('learned-')}.png")
            shutil.copyfile(curve, report.parent / copied[-1])
    table = (out / "table.md").read_text()
    commands = "\n".join(log)
    plots = "\n".join(f"![{Path(name).stem}]({name})" for name in copied)
    atomic_write_text(
        report,
        f"# Generated by benchmarks/bench_policies.py on {time.strftime('%Y-%m-%d %H:%M')}\n\n"
        f"## Commands (wall time each)\n\n```\n{commands}\n```\n\n"
        f"## Comparison on engine seeds {args.seeds}\n\n{table}\n\n## Plots (first evaluation seed)\n\n{plots}\n\n"
        f"## Resolved config of the comparison\n\n```yaml\n{resolved.strip()}\n```\n")
    print(f"report: {report}")


if __name__ == "__main__":
    main()
