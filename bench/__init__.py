"""The performance benchmark (docs/TESTING.md#benchmark): the reconciler against kubectl on the same objects.

    make bench                                   # 100 and 1000 workspaces, 3 runs each
    BENCH_WORKSPACES=300 make bench              # 100 and 300
    BENCH_SIZES=100,1000,5000 make bench         # the sizes to show growth over (largest is reported)

Other knobs: BENCH_RUNS (repetitions per size, default 3; medians are reported), BENCH_PROFILE=0 (skip
the cProfile runs), BENCH_KEEP=1 (keep the temporary directory, for debugging).

For each size it generates a repo of N workspaces over 2 environments, 3 compute blocks and 1 data
source, starts the local control plane (tests/cluster/launcher.py) with an audit log, and measures,
each run in fresh namespaces: `reconcile validate`, the plan against an empty namespace, the apply
that creates everything, `kubectl apply --server-side` of `reconcile render` creating the same
objects, the no-op plan against `kubectl diff --server-side`, the no-op apply, and the plan after a
change to a compute block that 1% of the workspaces use. API requests are counted from the
apiserver's audit log (by User-Agent), peak RSS from wait4() of each reconciler process.

It writes bench/RESULTS.md and bench/scaling.png; progress goes to stderr, and the LAST line of
stdout is one JSON object with the numbers of the largest size (docs/TESTING.md#benchmark names its keys).

The modules, in the order a run uses them:

- `config`   the knobs (environment), the targets, the measured keys, logging;
- `repo`     the generated repo of N workspaces;
- `kube`     the harness's own admin calls (namespaces, volumes, claims, pod counts) with the official
             `kubernetes` client, under a User-Agent that is never counted;
- `audit`    request counting from the apiserver's audit log, across its rotations;
- `runner`   running one reconciler or kubectl command: wall time, peak RSS, CPU;
- `samples`  what one size measured (`SizeResult`);
- `measure`  the runs themselves: which commands, in which order, what each must print;
- `results`  the JSON line, the targets' verdicts, RESULTS.md, the saved state for `--report`;
- `profiles` the cProfile summary in RESULTS.md;
- `plot`     bench/scaling.png;
- `main`     the control plane and the entry point (`python bench/run.py` or `python -m bench`).
"""
