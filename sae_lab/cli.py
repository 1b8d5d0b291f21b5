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
    epilog = (
        "Any config key can be overridden as key.subkey=value (values are read as YAML); list items by index\n"
        "(saes.0.k=64; the index one past the end adds an item), and key+=item appends to a list\n"
        "(saes+='{architecture: topk, k: 64}', activations.hooks+=blocks.3.hook_resid_post).\n"
        "Config keys:\n" + "\n".join([*config_help(model), *extra_help])
    )
    p = sub.add_parser(
        name, help=summary, description=summary, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
    print(
        f"cache {cfg.output}: {t['shards']} shards, {t['contexts']} contexts, {t['tokens']} tokens, "
        f"kept {t['kept_tokens']}, excluded special {t['excluded_special']}, outliers {t['excluded_outliers']}"
    )
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
        print(
            f"  {r.name:>24}: fvu {m.get('fvu', float('nan')):.4f}  l0 {m.get('l0', float('nan')):.1f}  "
            f"dead {len(r.dead_latents)}  -> {r.sae_dir}"
        )


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


def _target_and_model(args, lazy: bool = False):
    """(is a run dir, model or None): a run dir uses its config's model (on --device if given); an SAE dir (or a
    published SAE, RELEASE:SAE_ID, converted to one) uses the model its cfg.json records, else --model.
    ``lazy``: a loader of the model instead (for commands that may not need it)."""
    from sae_lab.pretrained import model_for, resolve_target
    from sae_lab.rundir import RunDir
    from sae_lab.saeref import TargetError, not_a_target, target_kind

    target = resolve_target(args.target)  # a published SAE (RELEASE:SAE_ID) -> its converted directory
    args.target = str(target)
    kind = target_kind(target)
    if kind is None:
        raise TargetError(not_a_target(target))
    if kind == "run":
        if args.device is None:
            return True, None  # the library loads the run's model as its config says
        from sae_lab.models import ModelConfig

        model_cfg = {**(RunDir(target).read_config().get("model") or {}), "device": args.device}
        return True, ModelConfig.model_validate(model_cfg).load()
    from sae_lab.models import load_model

    name = model_for(target, args.model)
    if lazy:
        return False, lambda: load_model(name, args.device or "auto")
    return False, load_model(name, args.device or "auto")


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


def cmd_export(args) -> int:
    from sae_lab.export import export

    names = ("model_id", "source_set", "release", "creator_id", "creator_name")
    options = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    result = export(args.target, args.to, args.out, features=args.features, **options)
    for name, info in result["saes"].items():
        count = info.get("features", (info.get("rows") or {}).get("features"))
        print(f"{name}: {count} features -> {Path(args.out) / info['directory']}")
    return 0


def cmd_explain(args) -> int:
    from sae_lab.explain import ExplainConfig, explain_run, explain_sae_dir

    cfg = _section_config(args.target, "explain", ExplainConfig, args.overrides)
    is_run, model = _target_and_model(args, lazy=True)
    result = explain_run(args.target, cfg, model) if is_run else explain_sae_dir(args.target, model, cfg)
    for name, r in result["saes"].items():
        m = r["mean"]
        print(
            f"{name}: {r['explained']}/{r['features']} features explained by {r['explainer']} "
            f"({r['explained_now']} now), {r['scored']} scored -> {r['database']}"
        )
        for method in ("detection", "fuzzing"):
            if m[method] is not None:
                floor = m[f"{method}_random"]
                print(
                    f"  {method:>9}: mean balanced accuracy {m[method]:.3f} (random explanation: "
                    f"{'n/a' if floor is None else f'{floor:.3f}'}; 0.5 = chance)"
                )
        if r["unparsed_contexts"]:
            print(f"  {r['unparsed_contexts']} scored contexts got no parsable answer (not counted)")
    return 0


def cmd_dashboard(args) -> int:
    from sae_lab.dashboard import dashboard_command

    cmd, url, warning = dashboard_command(
        args.targets, host=args.host, port=args.port, model=args.model, device=args.device
    )
    if warning:
        print(f"sae-lab dashboard: warning: {warning}", file=sys.stderr)
    print(f"sae-lab dashboard: {url}  (Ctrl+C stops it)", flush=True)
    os.execv(cmd[0], cmd)  # become Streamlit: signals and the exit code are its own


COMMANDS: dict[str, Callable] = {
    "eval": cmd_eval,
    "analyze": cmd_analyze,
    "cache": cmd_cache,
    "verify": cmd_verify,
    "train": cmd_train,
    "run": cmd_run,
    "dashboard": cmd_dashboard,
    "export": cmd_export,
    "explain": cmd_explain,
}


def build_parser() -> argparse.ArgumentParser:
    """The ``sae-lab`` parser: one small function below adds each subcommand's parser."""
    parser = argparse.ArgumentParser(
        prog="sae-lab",
        description="Sparse autoencoders on language-model activations: cache, train, evaluate, analyse, explore.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    _cache_parser(sub)
    _train_parser(sub)
    _run_parser(sub)
    _eval_parser(sub)
    _analyze_parser(sub)
    _explain_parser(sub)
    _dashboard_parser(sub)
    _export_parser(sub)
    _verify_parser(sub)
    return parser


def _cache_parser(sub) -> None:
    from sae_lab.activations.config import CacheConfig

    _config_parser(sub, "cache", CacheConfig, "cache activations of a model at hook points on disk")


def _sae_config_help() -> list[str]:
    """The `saes.N.*` keys of a run config: the shared SAE options, then each architecture's own."""
    from sae_lab.saes import SAEConfig
    from sae_lab.saes.registry import config_classes

    sae_help = ["  saes.N.* — each SAE of the sweep; every architecture has:", *config_help(SAEConfig, "saes.N.")]
    for arch, cls in config_classes().items():
        sae_help += [f"  architecture: {arch} adds:", *config_help(cls, "saes.N.", tuple(SAEConfig.model_fields))]
    return sae_help


def _run_config_parser(sub, name: str, summary: str) -> None:
    """`train` and `run`: a run config, and how to treat an existing run directory."""
    from sae_lab.pipeline import RunConfig

    p = _config_parser(sub, name, RunConfig, summary, _sae_config_help())
    p.add_argument(
        "--resume",
        choices=["auto", "never", "must"],
        default="auto",
        help="auto: continue a run dir with the same config; never: refuse an existing run; "
        "must: fail if there is nothing to resume",
    )
    p.add_argument("--overwrite", action="store_true", help="with --resume never: delete the old run first")


def _train_parser(sub) -> None:
    _run_config_parser(sub, "train", "train a sweep of SAEs from a run config (cache must exist, or cache: null)")


def _run_parser(sub) -> None:
    _run_config_parser(sub, "run", "the whole job: cache, train, evaluate and analyse a run config")


def _target_parser(sub, name: str, model, summary: str) -> None:
    """`eval` and `analyze`: a run or SAE directory, key=value options, and the model to run it on."""
    p = sub.add_parser(
        name,
        help=summary,
        description=summary,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Options (key=value; defaults come from the run's config.yaml):\n" + "\n".join(config_help(model)),
    )
    p.add_argument(
        "target",
        help="a run directory, an SAE directory (ours or SAELens format), or a published "
        "SAE: RELEASE:SAE_ID (e.g. gpt2-small-res-jb:blocks.8.hook_resid_pre)",
    )
    p.add_argument("overrides", nargs="*", help="key.subkey=value overrides")
    p.add_argument(
        "--model",
        default=None,
        help="model for an SAE directory (default: the model its cfg.json "
        "records, else embedded; a different one is an error)",
    )
    p.add_argument(
        "--device",
        default=None,
        help="device for the model and SAEs: auto|cpu|cuda|cuda:N|mps (default: the run config's "
        "model.device, else auto)",
    )


def _eval_parser(sub) -> None:
    from sae_lab.evaluation import EvalConfig

    _target_parser(sub, "eval", EvalConfig, "faithfulness metrics of a run's SAEs -> eval.json")


def _analyze_parser(sub) -> None:
    from sae_lab.evaluation import AnalyzeConfig

    _target_parser(sub, "analyze", AnalyzeConfig, "feature statistics -> features.sqlite per SAE")


def _explain_parser(sub) -> None:
    from sae_lab.explain import ExplainConfig

    _target_parser(sub, "explain", ExplainConfig, "explain and score features with a chat model -> features.sqlite")


def _dashboard_parser(sub) -> None:
    p = sub.add_parser(
        "dashboard",
        help="open the Streamlit dashboard on run directories and/or SAE directories",
        description="Browse, search, compare, ablate and steer the features of run directories and "
        "SAE directories (ours or SAELens format). Serves on 127.0.0.1 unless --host says "
        "otherwise; reads only inside the directories given.",
    )
    p.add_argument(
        "targets",
        nargs="+",
        help="run directories, SAE directories and/or published SAEs "
        "(RELEASE:SAE_ID; a glob SAE_ID selects several of a listed release)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="model for SAE directories and for runs whose config names none (default: the run's model, else embedded)",
    )
    p.add_argument("--device", default="auto", help="where the model and SAEs run (auto | cpu | cuda | mps)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8501)


def _export_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export feature databases for Neuronpedia, SAEDashboard/SAE-Vis or Parquet",
        description="Export the feature database(s) (`sae-lab analyze`) of a run directory (each SAE "
        "into OUT/<name>/), an SAE directory or a features.sqlite file into the new "
        "directory OUT. Formats: neuronpedia (SAEDashboard's dashboard batches + "
        "Neuronpedia's import layout, with explanations when present), saedashboard "
        "(sae_vis_data.json for SaeVisData.load_json), parquet (features, examples, "
        "logits tables).",
    )
    p.add_argument("target", help="a run directory, an SAE directory or a features.sqlite file")
    p.add_argument("out", help="output directory (must not exist, or be empty)")
    p.add_argument("--to", required=True, choices=["neuronpedia", "saedashboard", "parquet"], help="export format")
    p.add_argument("--features", default=None, help="features to export: ids and ranges, e.g. 0:100,512 (default all)")
    for flag, what in (
        ("--model-id", "Neuronpedia model id (default: the model's name, e.g. smollm2-135m-instruct)"),
        ("--source-set", "Neuronpedia source set (default: the SAE's name); source = <layer>-<set>"),
        ("--release", "Neuronpedia release name (default: the source set)"),
        ("--creator-id", "Neuronpedia user id that owns the rows (default: the bulk-import user)"),
        ("--creator-name", "Neuronpedia creator name (default: sae-lab)"),
    ):
        p.add_argument(flag, default=None, help=f"neuronpedia only: {what}")


def _verify_parser(sub) -> None:
    p = sub.add_parser("verify", help="check a cache's shards; exits non-zero and names bad shards")
    p.add_argument("cache", help="the activation cache directory")
    p.add_argument("--quick", action="store_true", help="only check that files exist (skip SHA-256)")


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
    ok = False
    try:
        code = COMMANDS[args.command](args)
        ok = code in (0, None)
        return code
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 -- the CLI's single error boundary
        if args.verbose:
            raise
        print(f"sae-lab {args.command}: error: {describe_error(e)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(e, ConfigError) else EXIT_FAILED
    finally:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: every rank leaves together
            from sae_lab.distributed import shut_down

            shut_down(ok)


def describe_error(e: BaseException) -> str:
    """The message for an exception: ours carry their own; others get their type and a pointer to -v."""
    import errno

    from sae_lab.errors import is_known
    from sae_lab.fileio import is_space_error

    text = str(e) or type(e).__name__
    if is_space_error(e):
        where = f" '{e.filename}'" if isinstance(e, OSError) and e.filename else ""
        return (
            f"could not write{where}: {text}. The disk is full or a file-size limit (ulimit -f) was reached: "
            "free space (or lift the limit) and run the same command again; it resumes where it stopped."
        )
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
