"""One comparison table from several `arkd compare` runs on the same engine seeds.

    python benchmarks/merge_compare.py OLD/table.json NEW/table.json --references akl,greedy \
        [--metrics test_divergence,val_divergence,tail_coverage] [--pool] --out DIR

A policy compared later (a new agent, a new baseline) joins an earlier comparison without replaying the
earlier policies: the per-seed metrics saved in each table.json are paired by seed again, so the paired
differences and their bootstrap intervals are those one `arkd compare` of all of them would give (runs on
CPU are deterministic per seed). With --pool, tables on different seeds are pooled into one table over all
their seeds (tables on the same seeds merge first), for the policies present on every seed. Writes table.md,
table.csv and table.json to --out and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from train.compare import build_table, merge_results, pool_results, write_outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs="+", type=Path, help="table.json files of `arkd compare` runs")
    parser.add_argument("--references", default="", help="policies the differences are taken against")
    parser.add_argument("--metrics", default="", help="metrics to keep (default: all)")
    parser.add_argument("--pool", action="store_true",
                        help="pool tables on disjoint seed sets into one table over all their seeds")
    parser.add_argument("--out", type=Path, required=True, help="folder for the merged table")
    args = parser.parse_args()
    for path in args.tables:
        if not path.is_file():
            parser.error(f"{path}: no such table.json")
    tables = [json.loads(path.read_text()) for path in args.tables]
    by_seeds: dict[tuple[int, ...], list[dict]] = {}
    for table in tables:
        by_seeds.setdefault(tuple(table["seeds"]), []).append(table)
    if len(by_seeds) > 1 and not args.pool:
        parser.error(f"the tables ran on {len(by_seeds)} different seed sets: pass --pool to pool disjoint ones")
    try:
        seeds, results = pool_results([merge_results(group) for group in by_seeds.values()])
    except ValueError as err:
        parser.error(str(err))
    if args.metrics:
        keep = args.metrics.split(",")
        results = {policy: [{m: run[m] for m in keep if m in run} for run in runs] for policy, runs in results.items()}
    table = build_table(results, seeds, references=[r for r in args.references.split(",") if r])
    write_outputs(table, args.out)
    print(table.markdown())


if __name__ == "__main__":
    main()
