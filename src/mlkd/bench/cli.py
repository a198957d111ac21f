"""The ``mlkd bench`` and ``mlkd report`` subcommands (added to the ``mlkd`` parser by ``mlkd.cli``).

Like every mlkd command they raise ValueError/OSError for bad input; ``mlkd.cli.main`` prints it as one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .executors import EXECUTORS

GRID_EXAMPLE = """\
  # grid.toml — every key optional except datasets and methods; command-line options override it
  datasets = ["emotions", "flags", "yeast"]
  seeds = [0, 1, 2]
  methods = ["bce", "ls:epsilon=0.1", {name = "skdtea", label = "skdtea-a0.3", params = {alpha = 0.3, tau = 1}}]
  [params]            # shared: given to every method that has the parameter; training settings to all
  hidden = 256
  max_epochs = 100"""


def add_commands(sub, formatter) -> None:
    """Add ``bench`` and ``report`` to the ``mlkd`` subcommand parser ``sub``."""
    from ..cli import _data_dir_arg, _nonnegative_float, _positive_int  # mlkd.cli is loaded: it is the caller
    p = sub.add_parser(
        "bench",
        help="run a resumable benchmark grid into an SQLite results database",
        description=(
            "Run every cell of a grid — data sets × method configs × seeds (× label-noise settings) — under\n"
            "PROTOCOL.md (fixed seed-0 iterative-stratified 1/6 validation split of train; seeds change\n"
            "initialisation and batch order; test touched once; every metric at threshold 0.5 and at the\n"
            "validation-tuned threshold) and write each finished cell at once as one row of RESULTS.db.\n\n"
            "A cell is identified by its data set, seed, noise and *resolved* config (method defaults merged\n"
            "with the given parameters, plus the training settings; a teacher_dir or model_dir counts as its\n"
            "absolute path and the saved model's save id): rerunning the same command skips the cells\n"
            "already in RESULTS.db, so a killed run resumes where it stopped, and a changed default or a\n"
            "teacher fitted again into its folder is a new cell. A cell that was running when the run was\n"
            "killed continues from its last checkpoint (at most --checkpoint-seconds old) to the numbers of\n"
            "an uninterrupted fit, on the thread count the checkpoint was trained on (whatever --jobs and\n"
            "--threads say now); a row records it (threads, fit_threads), and a cell that an earlier mlkd\n"
            "resumed on another count is named at the end of the run and by mlkd report.\n"
            "Cells that fail are listed in RESULTS.db's failures table and retried next time."
        ),
        formatter_class=formatter,
        epilog=(
            "examples:\n"
            "  mlkd bench results.db -d emotions,flags -m bce -m skdtea --seeds 0-2\n"
            "  mlkd bench results.db -d emotions -m skdtea -m 'skdtea:alpha=0.3,tau=1' --param hidden=256\n"
            "  mlkd bench results.db -d yeast -m bce -m pll --noise none,symmetric:0.2,missing:0.4   # noisy labels\n"
            "  mlkd bench results.db --grid grid.toml --jobs 4            # 4 local processes\n"
            "  mlkd bench results.db --grid grid.toml --executor ray --address auto   # an existing Ray cluster\n"
            "  mlkd bench results.db --grid grid.toml --dry-run           # list the cells, done or to run\n"
            "  mlkd report results.db --out report/\n\n"
            "method specs: NAME or NAME:KEY=VALUE,... with the method's parameters or training settings\n"
            "(max_epochs, batch_size, lr, weight_decay, optimizer, momentum, lr_decay, patience, monitor,\n"
            "device, fused_optimizer, fused_mlp); --param applies to every method that has the parameter.\n"
            "fused_optimizer=false and fused_mlp=false select the reference path (per-parameter AdamW,\n"
            "nn.Dropout), as benchmarks/headline.toml does; the default fast path gives the same metrics\n"
            "up to seed noise and other cells (other keys).\n\n"
            f"grid file (TOML, or JSON with the same keys):\n{GRID_EXAMPLE}\n\n"
            "query the results with any SQLite client, e.g.\n"
            "  sqlite3 results.db \"SELECT dataset, label, AVG(example_f1_tuned), COUNT(*) FROM results\n"
            "                      GROUP BY dataset, label\""
        ),
    )
    p.add_argument("db", metavar="RESULTS.db", help="SQLite results database (created if missing)")
    p.add_argument("--grid", "-g", metavar="FILE", help="grid file (.toml or .json); see below")
    p.add_argument("--datasets", "-d", action="append", default=None, metavar="D1,D2,...",
                   help="data set names, comma-separated or repeated (see 'mlkd datasets')")
    p.add_argument("--method", "-m", action="append", default=None, metavar="SPEC",
                   help="a method config, repeatable: NAME or NAME:KEY=VALUE,... (e.g. 'skdtea:alpha=0.3,tau=1')")
    p.add_argument("--seeds", "-s", metavar="LIST", help="seeds, e.g. 0,1,2 or 0-4 (default: 0,1,2)")
    p.add_argument("--noise", metavar="LIST",
                   help="label-noise settings for the training and validation labels (test labels stay clean): "
                        "none or KIND:RATE with KIND symmetric, missing or correlated, comma-separated "
                        "(default: none; e.g. none,symmetric:0.2,missing:0.4)")
    p.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter for every method that has it, or a training setting, repeatable "
                        "(e.g. --param hidden=16 --param max_epochs=3)")
    p.add_argument("--executor", "-e", choices=EXECUTORS, metavar="{" + ",".join(EXECUTORS) + "}",
                   help="where cells run (default: process if --jobs > 1, else sequential); ray needs "
                        "pip install 'mlkd[ray]'")
    p.add_argument("--jobs", "-j", type=_positive_int, metavar="N",
                   help="parallel workers: processes or the CPUs of a local Ray instance (default: 1, sequential; "
                        "with --executor process or ray: one per core)")
    p.add_argument("--threads", type=_thread_count, metavar="N",
                   help="torch threads per worker (default: cores // jobs, at least 1; sequential: torch's "
                        "choice). Same threads → the same numbers on any executor; a cell continued from a checkpoint "
                        "runs on the count the checkpoint was trained on")
    p.add_argument("--address", metavar="ADDR",
                   help="Ray cluster to connect to (e.g. auto, ray://head:10001); default: start a local one")
    p.add_argument("--data-dir", metavar="DIR", type=_data_dir_arg,
                   help="directory of the MULAN data set folders (default: $MLKD_DATA)")
    g = p.add_argument_group("interrupted cells (training state: safetensors + JSON, written atomically)")
    g.add_argument("--checkpoint-dir", metavar="DIR",
                   help="where running cells keep their training state, so that a rerun after a kill continues a "
                        "long cell mid-fit to the same numbers (default: RESULTS.checkpoints beside the database; "
                        "a cell's state is deleted once its row is written; on a Ray cluster use a folder every "
                        "node sees)")
    g.add_argument("--checkpoint-seconds", type=_nonnegative_float, default=60.0, metavar="S",
                   help="at least S seconds between a cell's checkpoints (default: 60, so a cell shorter than "
                        "that only writes its finished stages; 0: after every epoch)")
    g.add_argument("--no-checkpoints", action="store_true",
                   help="no training state: a killed cell starts over")
    p.add_argument("--dry-run", "-n", action="store_true",
                   help="list the cells and which are done (or part-done: a checkpoint to continue); run nothing")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "report",
        help="write Markdown tables and figures from a results database",
        description=(
            "Write a report folder from a results database made by 'mlkd bench':\n"
            "  index.md   average ranks per metric, the Friedman test and Nemenyi critical-difference diagrams\n"
            "             (Demšar 2006), the method pairs beyond the critical difference, and links to every figure\n"
            "  tables.md  mean ± std per data set × method for every metric at both thresholds, best in bold,\n"
            "             average ranks across data sets\n"
            "  tuned.md   (--tune-on-validation) per data set, each method's config with the best mean\n"
            "             validation score, in a separate table (PROTOCOL.md §8)\n"
            "  figures/   CD diagrams, per-data-set metric bar charts, training curves, and for methods with\n"
            "             soft targets (skdtea) heat maps of soft targets vs the labels on a few validation rows\n"
            "             (a label-noise cell: its clean labels and the noisy ones its fit was given)\n"
            "A grid with fewer than 2 methods or data sets gets its tables; index.md says why there is no test."
        ),
        formatter_class=formatter,
        epilog=(
            "examples:\n"
            "  mlkd report results.db                         # writes results-report/\n"
            "  mlkd report results.db --out docs/bench\n"
            "  mlkd report results.db --methods 'bce,skdtea*' --datasets emotions,yeast --out report-skdtea/\n"
            "  mlkd report results.db --curves dataset=emotions,method=skdtea,seed=0 --curves 'label=bce*'\n"
            "  mlkd report sweep.db --tune-on-validation      # grid with several configs per method\n\n"
            "--curves filters choose cells that get a figure of every loss term per epoch: KEY=GLOB pairs over\n"
            "dataset, method, label, seed, noise, key, or 'all'."
        ),
    )
    p.add_argument("db", metavar="RESULTS.db", help="a results database written by 'mlkd bench'")
    p.add_argument("--out", "-o", metavar="DIR", help="report folder (default: <RESULTS>-report beside the database)")
    p.add_argument("--curves", action="append", default=[], metavar="FILTER",
                   help="cells whose training curves to draw, repeatable (e.g. dataset=emotions,method=skdtea,seed=0)")
    p.add_argument("--metrics", metavar="M1,M2,...",
                   help="report only these metrics (default: all), e.g. example_f1,micro_f1,macro_f1,mAP")
    p.add_argument("--methods", metavar="L1,L2,...", action="append",
                   help="report only the cells of these method labels, in this column order (globs allowed, "
                        "e.g. 'bce,skdtea*'; repeatable; a label's own parameters stay together: "
                        "'bce,ls:epsilon=0.3,hidden=8' is two labels)")
    p.add_argument("--datasets", metavar="D1,D2,...", help="report only the cells of these data sets (globs allowed)")
    p.add_argument("--tune-on-validation", action="store_true",
                   help="also write tuned.md: per data set, each method's config with the best mean validation "
                        "score (PROTOCOL.md §8; test metrics are never used to choose)")
    p.set_defaults(func=cmd_report)


def _thread_count(text: str) -> int:
    """--threads: a fit's bound (TrainConfig's MAX_THREADS); OpenMP dies starting thousands (a segmentation fault)."""
    from ..cli import _positive_int
    from ..trainer import MAX_THREADS

    value = _positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"{text!r}; expected a thread count in [1, {MAX_THREADS}]")
    return value


def _split(values) -> list[str] | None:
    if values is None:
        return None
    return [v.strip() for text in values for v in text.split(",") if v.strip()]


def split_labels(values) -> list[str] | None:
    """Method labels from comma-separated text, keeping a label's own parameters together: the labels
    'bce,ls:epsilon=0.3,hidden=8' are bce and ls:epsilon=0.3,hidden=8 (a piece KEY=VALUE after a label with
    parameters continues it)."""
    from .report import continues_label

    if values is None:
        return None
    labels: list[str] = []
    for piece in (v.strip() for text in values for v in text.split(",")):
        if not piece:
            continue
        if labels and continues_label(labels[-1], piece):
            labels[-1] += "," + piece
        else:
            labels.append(piece)
    return labels


def build_grid(args):
    from .grid import Grid, parse_assignments, parse_seeds

    params: dict = {}
    for text in args.param:
        for key, value in parse_assignments(text, "--param").items():
            if key in params:
                raise ValueError(f"parameter {key!r} given twice with --param; expected each parameter once")
            params[key] = value
    data_dir = str(Path(args.data_dir).expanduser().resolve()) if args.data_dir else None
    axes = {
        "datasets": _split(args.datasets),
        "methods": args.method,
        "seeds": parse_seeds(args.seeds) if args.seeds is not None else None,
        "noise": _split([args.noise]) if args.noise is not None else None,
    }
    if args.grid:
        grid = Grid.from_file(args.grid, params=params, **axes)
    else:
        missing = [f"--{k}" if k != "methods" else "--method" for k in ("datasets", "methods") if not axes[k]]
        if missing:
            raise ValueError(f"no {' and no '.join(missing)} given; expected e.g. -d emotions,flags -m bce -m skdtea "
                             "or --grid grid.toml")
        grid = Grid.build(params=params, **{k: v for k, v in axes.items() if v is not None})
    grid.data_dir = data_dir
    return grid


def _check_data(datasets, data_dir) -> list[str]:
    from ..data import dataset_status

    return [f"{d} ({status})" for d in datasets if (status := dataset_status(d, data_dir=data_dir)) != "found"]


def cmd_bench(args) -> int:
    from dataclasses import replace

    from .executors import make_executor
    from .run import checkpoint_root, plan, run_grid
    from .runner import has_checkpoint

    grid = build_grid(args)
    cells = grid.cells()
    missing = _check_data(grid.datasets, grid.data_dir)
    where = grid.data_dir or "$MLKD_DATA"
    if args.no_checkpoints and args.checkpoint_dir is not None:
        raise ValueError("--no-checkpoints and --checkpoint-dir contradict each other; expected one of them")
    checkpoints = None if args.no_checkpoints else Path(args.checkpoint_dir or checkpoint_root(args.db)).expanduser()
    if args.dry_run:
        status = plan(cells, args.db)
        n_done = sum(done for _, done in status)
        part = {c.key for c, done in status if not done and checkpoints is not None
                and has_checkpoint(replace(c, checkpoint_dir=str(checkpoints)))}
        width = max(len(c.label) for c in cells)
        print(f"{'status':6}  {'dataset':10}  {'method':{width}}  seed  noise  key")
        for cell, done in status:
            state = "done" if done else "part" if cell.key in part else "todo"
            print(f"{state:6}  {cell.dataset:10}  {cell.label:{width}}  {cell.seed:4}  {cell.noise:5}  {cell.key}")
        print(f"{len(cells)} cells: {n_done} done, {len(cells) - n_done} to run"
              + (f" ({len(part)} part-done: they continue from a checkpoint)" if part else "")
              + " (dry run: nothing ran)")
        if missing:
            print(f"data not found in {where}: {', '.join(missing)}", file=sys.stderr)
        return 0
    if missing:
        raise ValueError(f"data set files not usable in {where}: {', '.join(missing)}; expected the MULAN folders "
                         "there (set MLKD_DATA or --data-dir; see 'mlkd datasets')")
    executor = make_executor(args.executor, args.jobs, args.threads, args.address)
    summary = run_grid(cells, args.db, executor, progress=not args.quiet and sys.stderr.isatty(),
                       log=lambda line: print(line, file=sys.stderr, flush=True),
                       checkpoints=checkpoints, checkpoint_seconds=args.checkpoint_seconds)
    if summary.failed:
        for cell, error in summary.failed[:5]:
            print(f"mlkd: failed: {cell.dataset} {cell.label} seed {cell.seed}: {' '.join(error.split())}",
                  file=sys.stderr)
        print(f"mlkd: error: {len(summary.failed)} of {len(cells)} cells failed; rerun the same command to retry "
              "them", file=sys.stderr)
        return 1
    return 0


def cmd_report(args) -> int:
    from .report import make_report

    metrics = _split([args.metrics]) if args.metrics is not None else None  # given but empty: refused
    report = make_report(args.db, args.out, curves=args.curves, metrics=metrics,
                         methods=split_labels(args.methods) if args.methods is not None else None,
                         datasets=_split([args.datasets]) if args.datasets is not None else None,
                         tune=args.tune_on_validation)
    extra = f", tuned.md with {len(report.choices)} choice(s)" if report.tuned else ""
    print(f"wrote {report.index} (+ tables.md{extra}, {len(report.figures)} figures)")
    return 0
