"""Run benchmarks: each ``bench/bench_<name>.py`` has ``main(quick: bool) -> dict``.

Each prints its own table (figures, and ratios against stock library behaviour measured in the same
run) and returns its figures, which are saved as JSON in ``bench/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"which to run (default all): {available()}")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args(argv)
    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {available()}")
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    failed = []
    for name in names:
        print(f"\n=== bench {name} ===", flush=True)
        started = time.monotonic()
        module = importlib.import_module(f"bench.bench_{name}")
        try:
            figures = module.main(quick=args.quick)
        except Exception as exc:  # a broken benchmark must not hide the others' figures
            print(f"bench {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed.append(name)
            continue
        figures = {"name": name, "seconds": round(time.monotonic() - started, 1), **figures}
        (out_dir / f"{name}.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")
        print(f"(saved bench/results/{name}.json)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
