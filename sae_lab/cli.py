"""The ``sae-lab`` command: a thin layer over the library (every command is one library call)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable

from sae_lab.cli_help import config_help
from sae_lab.configbase import ConfigError, load_config

EXIT_USAGE, EXIT_FAILED = 2, 1


def _config_parser(sub, name: str, model, summary: str, extra_help: list[str] = ()) -> argparse.ArgumentParser:
    epilog = ("Any config key can be overridden as key.subkey=value (values are read as YAML).\n"
              "Config keys:\n" + "\n".join([*config_help(model), *extra_help]))
    p = sub.add_parser(name, help=summary, description=summary, epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="YAML config file (optional if overrides give every required key)")
    p.add_argument("overrides", nargs="*", help="key.subkey=value overrides")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p


def _split_config_args(args) -> tuple[str | None, list[str]]:
    """Allow `sae-lab cache key=value` with no config file."""
    if args.config is not None and "=" in args.config:
        return None, [args.config, *args.overrides]
    return args.config, list(args.overrides)


def cmd_cache(args) -> int:
    from sae_lab.activations.cache_writer import build_cache
    from sae_lab.activations.config import CacheConfig
    from sae_lab.distributed import world

    path, overrides = _split_config_args(args)
    cfg = load_config(CacheConfig, path, overrides)
    if args.print_config:
        print(cfg.model_dump_json(indent=2))
        return 0
    manifest = build_cache(cfg)
    if world()[0] != 0:
        return 0
    t = manifest["totals"]
    print(f"cache {cfg.output}: {t['shards']} shards, {t['contexts']} contexts, {t['tokens']} tokens, "
          f"kept {t['kept_tokens']}, excluded special {t['excluded_special']}, outliers {t['excluded_outliers']}")
    return 0


def cmd_verify(args) -> int:
    from sae_lab.activations.cache_reader import verify_cache

    problems = verify_cache(args.cache, checksums=not args.quick)
    for p in problems:
        print(p)
    print(f"{args.cache}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 0 if not problems else EXIT_FAILED


def _run_config(args):
    from sae_lab.pipeline import RunConfig

    path, overrides = _split_config_args(args)
    args.config_path = path
    return load_config(RunConfig, path, overrides)


def _print_train_summary(result) -> None:
    print(f"run {result.run_dir}: {result.status}, {result.tokens_seen} tokens, {result.steps} steps")
    for r in result.results.values():
        m = r.metrics
        print(f"  {r.name:>24}: fvu {m.get('fvu', float('nan')):.4f}  l0 {m.get('l0', float('nan')):.1f}  "
              f"dead {len(r.dead_latents)}  -> {r.sae_dir}")


def cmd_train(args) -> int:
    from sae_lab.distributed import world
    from sae_lab.pipeline import train_run

    cfg = _run_config(args)
    if args.print_config:
        print(cfg.model_dump_json(indent=2))
        return 0
    result = train_run(cfg, resume=args.resume, overwrite=args.overwrite, config_path=args.config_path)
    if world()[0] == 0:  # under torchrun, rank 0 reports for all
        _print_train_summary(result)
    return 0


def cmd_run(args) -> int:
    from sae_lab.pipeline import run_all

    cfg = _run_config(args)
    if args.print_config:
        print(cfg.model_dump_json(indent=2))
        return 0
    run_all(cfg, resume=args.resume, overwrite=args.overwrite, report=print, config_path=args.config_path)
    return 0


def _section_config(target: str, section: str, model_cls, overrides: list[str]):
    """A run's `eval`/`analyze` section from its config.yaml (if any), with overrides applied."""
    from sae_lab.configbase import apply_overrides, build_config
    from sae_lab.rundir import RunDir

    run = RunDir(target)
    data = (run.read_config().get(section) or {}) if run.is_run() else {}
    return build_config(model_cls, apply_overrides(data, overrides), where=f"the {section} section")


def _target_and_model(args):
    """(is a run dir, model or None): a run dir uses its config's model (on --device if given); an SAE dir
    needs --model."""
    from sae_lab.rundir import RunDir

    target = Path(args.target)
    if not target.exists():
        raise ConfigError(f"'{target}' does not exist; pass a run directory or an SAE directory")
    if RunDir(target).is_run():
        if args.device is None:
            return True, None  # the library loads the run's model as its config says
        from sae_lab.models import ModelConfig

        model_cfg = {**(RunDir(target).read_config().get("model") or {}), "device": args.device}
        return True, ModelConfig.model_validate(model_cfg).load()
    if not (target / "cfg.json").is_file():
        raise ConfigError(f"'{target}' is neither a run directory (with config.yaml) nor an SAE directory "
                          "(with cfg.json)")
    from sae_lab.models import load_model

    return False, load_model(args.model, args.device or "auto")


def cmd_eval(args) -> int:
    from sae_lab.evaluation import EvalConfig, evaluate_run, evaluate_sae_dir
    from sae_lab.pipeline import format_eval_table

    cfg = _section_config(args.target, "eval", EvalConfig, args.overrides)
    is_run, model = _target_and_model(args)
    if is_run:
        print(format_eval_table(evaluate_run(args.target, cfg, model)))
    else:
        rec = evaluate_sae_dir(args.target, model, cfg)
        print(format_eval_table({"saes": {Path(args.target).name: rec["metrics"]}}))
    return 0


def cmd_analyze(args) -> int:
    from sae_lab.evaluation import AnalyzeConfig, analyze_run, analyze_sae_dir

    cfg = _section_config(args.target, "analyze", AnalyzeConfig, args.overrides)
    is_run, model = _target_and_model(args)
    result = analyze_run(args.target, cfg, model) if is_run else analyze_sae_dir(args.target, model, cfg)
    for name, path in result.get("databases", {}).items():
        print(f"{name}: {path}")
    return 0


def cmd_dashboard(args) -> int:
    from sae_lab.dashboard import dashboard_command

    cmd, url, warning = dashboard_command(args.targets, host=args.host, port=args.port, model=args.model,
                                          device=args.device)
    if warning:
        print(f"sae-lab dashboard: warning: {warning}", file=sys.stderr)
    print(f"sae-lab dashboard: {url}  (Ctrl+C stops it)", flush=True)
    os.execv(cmd[0], cmd)  # become Streamlit: signals and the exit code are its own


COMMANDS: dict[str, Callable] = {"eval": cmd_eval, "analyze": cmd_analyze, "cache": cmd_cache, "verify": cmd_verify,
                                 "train": cmd_train, "run": cmd_run, "dashboard": cmd_dashboard}


def build_parser() -> argparse.ArgumentParser:
    from sae_lab.activations.config import CacheConfig

    parser = argparse.ArgumentParser(
        prog="sae-lab",
        description="Sparse autoencoders on language-model activations: cache, train, evaluate, analyse, explore.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    _config_parser(sub, "cache", CacheConfig, "cache activations of a model at hook points on disk")
    from sae_lab.pipeline import RunConfig
    from sae_lab.saes import SAEConfig
    from sae_lab.saes.registry import config_classes

    sae_help = ["  saes.N.* — each SAE of the sweep; every architecture has:", *config_help(SAEConfig, "saes.N.")]
    for arch, cls in config_classes().items():
        sae_help += [f"  architecture: {arch} adds:", *config_help(cls, "saes.N.", tuple(SAEConfig.model_fields))]
    for name, summary in (
        ("train", "train a sweep of SAEs from a run config (cache must exist, or cache: null)"),
        ("run", "the whole job: cache, train, evaluate and analyse a run config"),
    ):
        p = _config_parser(sub, name, RunConfig, summary, sae_help)
        p.add_argument(
            "--resume",
            choices=["auto", "never", "must"],
            default="auto",
            help="auto: continue a run dir with the same config; never: refuse an existing run; "
            "must: fail if there is nothing to resume",
        )
        p.add_argument("--overwrite", action="store_true", help="with --resume never: delete the old run first")
    from sae_lab.evaluation import AnalyzeConfig, EvalConfig

    for name, model, summary in (
        ("eval", EvalConfig, "faithfulness metrics of a run's SAEs -> eval.json"),
        ("analyze", AnalyzeConfig, "feature statistics -> features.sqlite per SAE"),
    ):
        p = sub.add_parser(
            name,
            help=summary,
            description=summary,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog="Options (key=value; defaults come from the run's config.yaml):\n" + "\n".join(config_help(model)),
        )
        p.add_argument("target", help="a run directory, or an SAE directory (ours or SAELens format)")
        p.add_argument("overrides", nargs="*", help="key.subkey=value overrides")
        p.add_argument("--model", default="embedded", help="model for an SAE directory (default: embedded)")
        p.add_argument("--device", default=None,
                       help="device for the model and SAEs: auto|cpu|cuda|cuda:N|mps (default: the run config's "
                            "model.device, else auto)")
    p = sub.add_parser("dashboard", help="open the Streamlit dashboard on run directories and/or SAE directories",
                       description="Browse, search, compare, ablate and steer the features of run directories and "
                                   "SAE directories (ours or SAELens format). Serves on 127.0.0.1 unless --host says "
                                   "otherwise; reads only inside the directories given.")
    p.add_argument("targets", nargs="+", help="run directories and/or SAE directories")
    p.add_argument("--model", default=None, help="model for SAE directories and for runs whose config names none "
                                                 "(default: the run's model, else embedded)")
    p.add_argument("--device", default="auto", help="where the model and SAEs run (auto | cpu | cuda | mps)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8501)
    p = sub.add_parser("verify", help="check a cache's shards; exits non-zero and names bad shards")
    p.add_argument("cache", help="the activation cache directory")
    p.add_argument("--quick", action="store_true", help="only check that files exist (skip SHA-256)")
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; ``key=value`` overrides may follow options (`eval DIR --model X n_tokens=512`)."""
    args, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if rest:
        args.overrides = [*args.overrides, *rest]
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sae-lab`` console script: the one place where errors become messages.

    Every exception raised by a command ends here: a one-line (or few-line) message naming the problem on
    stderr and a non-zero exit (2 for a config/usage problem, 1 otherwise). Tracebacks only with ``-v``.
    """
    parser = build_parser()
    args = _parse(parser, argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        _quiet_warnings()
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 -- the CLI's single error boundary
        if args.verbose:
            raise
        print(f"sae-lab {args.command}: error: {describe_error(e)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(e, ConfigError) else EXIT_FAILED


def describe_error(e: BaseException) -> str:
    """The message for an exception: ours carry their own; others get their type and a pointer to -v."""
    import errno

    from sae_lab.errors import is_known
    from sae_lab.fileio import is_space_error

    text = str(e) or type(e).__name__
    if is_space_error(e):
        where = f" '{e.filename}'" if isinstance(e, OSError) and e.filename else ""
        return (f"could not write{where}: {text}. The disk is full or a file-size limit (ulimit -f) was reached: "
                "free space (or lift the limit) and run the same command again; it resumes where it stopped.")
    if is_known(e):
        return text
    if isinstance(e, OSError) and e.filename:
        advice = ". Choose a writable location." if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else ""
        return f"{e.strerror or type(e).__name__}: '{e.filename}'{advice}"
    return f"{type(e).__name__}: {text} (an unexpected error; rerun with -v for details)"


def _quiet_warnings() -> None:
    """Library warnings stay one line each (no source-line echo) unless -v."""
    import warnings

    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"

if __name__ == "__main__":
    sys.exit(main())
