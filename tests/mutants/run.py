#!/usr/bin/env python3
"""Mutation testing of nbecho-core with the hand-made mutants in mutants.txt.

    python3 tests/mutants/run.py [--sim-only] [NAME-SUBSTRING ...]

`--sim-only` runs only the simulation's tests (`-p nbecho-tests`), without the core's
unit tests: how much the simulated network catches on its own.

Copies the committed tree (git archive HEAD) to a scratch directory once, then for each
mutant: applies it, builds, runs the core's and the simulation's tests (`cargo test -p
nbecho-core -p nbecho-tests`), records killed (tests failed) or survived, and restores
the file. The working tree is never touched. Prints one line per mutant and the score; exits 1 if a mutant is stale (its text is gone from the
code) or does not build (it proves nothing), or if the unmutated tree fails its tests.

Why not cargo-mutants alone: it makes about 400 mutants of core/src, over three hours on
two cores with the simulation as the test suite; these are the realistic slips, chosen
by hand, in about 20 minutes. cargo-mutants remains the wider net (see the README).
"""

import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SIM_ONLY = "--sim-only" in sys.argv[1:]
PACKAGES = ["-p", "nbecho-tests"] if SIM_ONLY else ["-p", "nbecho-core", "-p", "nbecho-tests"]
BUILD = ["cargo", "test", "-q", "--no-run"] + PACKAGES
TEST = ["cargo", "test", "-q"] + PACKAGES
TIMEOUT = 600


def parse(path):
    mutants, block = [], {}
    for line in open(path, encoding="utf-8").read().splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if block:
                mutants.append(block)
                block = {}
            continue
        key, _, value = line.partition(":")
        block[key.strip()] = value.strip()
    for m in mutants:
        missing = {"name", "file", "from", "to"} - m.keys()
        if missing:
            sys.exit(f"mutant {m.get('name', m)} lacks {sorted(missing)}")
    return mutants


def mutate(text, m):
    start = 0
    if m.get("after"):
        start = text.find(m["after"])
        if start < 0:
            return None
    at = text.find(m["from"], start)
    if at < 0:
        return None
    return text[:at] + m["to"] + text[at + len(m["from"]):]


def succeeds(command, tree, env):
    try:
        done = subprocess.run(command, cwd=tree, env=env, timeout=TIMEOUT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return done.returncode == 0
    except subprocess.TimeoutExpired:
        return False


def tests_pass(tree, env):
    return succeeds(TEST, tree, env)


def main():
    mutants = parse(os.path.join(HERE, "mutants.txt"))
    wanted = [a for a in sys.argv[1:] if a != "--sim-only"]
    if wanted:
        mutants = [m for m in mutants if any(w in m["name"] for w in wanted)]
    tree = tempfile.mkdtemp(prefix="nbecho-mutants-")
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, check=True,
                             stdout=subprocess.PIPE).stdout
    # -m: files get the time of extraction, not the commit's. Older times would let cargo
    # take whatever an earlier run left in the shared target directory (the last mutant
    # built, say) for up to date.
    subprocess.run(["tar", "-x", "-m", "-C", tree], input=archive, check=True)
    env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(ROOT, "target", "mutants"))
    print(f"tree: {tree}; tests: {' '.join(TEST)}", flush=True)
    started = time.time()
    if not tests_pass(tree, env):
        sys.exit("the unmutated tree fails its tests: nothing to measure")
    print(f"baseline passes ({time.time() - started:.0f} s)", flush=True)
    killed, survived, stale, broken = [], [], [], []
    for m in mutants:
        path = os.path.join(tree, m["file"])
        original = open(path, encoding="utf-8").read()
        mutated = mutate(original, m)
        if mutated is None:
            stale.append(m["name"])
            print(f"STALE     {m['name']}", flush=True)
            continue
        t = time.time()
        open(path, "w", encoding="utf-8").write(mutated)
        try:
            builds = succeeds(BUILD, tree, env)
            dead = builds and not tests_pass(tree, env)
        finally:
            open(path, "w", encoding="utf-8").write(original)
        if not builds:
            # A mutant the compiler rejects proves nothing about the tests.
            broken.append(m["name"])
            print(f"NO BUILD  {m['name']}", flush=True)
            continue
        (killed if dead else survived).append(m["name"])
        verdict = "killed  " if dead else "SURVIVED"
        print(f"{verdict}  {m['name']} ({time.time() - t:.0f} s)", flush=True)
    total = len(killed) + len(survived)
    print(f"\n{len(killed)} of {total} mutants killed; {len(survived)} survived"
          + (f"; {len(stale)} stale" if stale else "")
          + (f"; {len(broken)} did not build" if broken else "")
          + f" ({time.time() - started:.0f} s)")
    for name in survived:
        print(f"  survived: {name}")
    sys.exit(1 if stale or broken else 0)


if __name__ == "__main__":
    main()
