"""The `train` command: owns the outcome of a run, its one-line errors, failure.txt and the exit code.

    train [flags]            train (see train --help)
    train predict ...        classify images or folders with a trained model.pt, to a CSV or JSON Lines file
    train evaluate MODEL DATA   accuracy, per-class accuracy and a confusion matrix on labelled images
    train weights ...        the pretrained backbones' weights: list them, fetch more (see train weights --help)
    train export MODEL.pt    the model as one ONNX file that takes raw uint8 images (see train export --help)
    train serve MODEL.pt     score images over HTTP with the Azure ML inference server (see train serve --help)
"""

import argparse
import functools
import importlib
import os
import sys
import time
import traceback
import warnings

from trainjob import contract
from trainjob.environment import Environment
from trainjob.errors import DivergedError, Stopped, UserError, user_errors_exit
from trainjob.text import printable
from trainjob.version import code_version

# The subcommands: `train NAME ...` runs the module's main(argv).
SUBCOMMANDS = {name: f"trainjob.{name}" for name in ("predict", "evaluate", "weights", "export", "serve")}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    warnings.showwarning = _escaped_warning
    if argv and argv[0] in SUBCOMMANDS:
        sys.excepthook = _escaped_traceback
        sys.exit(_subcommand(argv[0], argv[1:]))
    env = Environment.read()
    code = run(argv, env)
    if env.azureml_run_id:
        sys.exit(code)  # the Azure ML SDK sends its last metrics from exit handlers
    # Everything is written and closed; the interpreter's teardown of torch would only add ~0.5-1 s to every run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@user_errors_exit
def _subcommand(name: str, argv: list[str]) -> int:
    Environment.read().check(name)  # first, before the command imports torch (seconds): a bad variable is instant
    return importlib.import_module(SUBCOMMANDS[name]).main(argv)


def run(argv: list[str], env: Environment | None = None) -> int:
    """Train; every outcome is an exit code, and every failure a line on stderr and in failure.txt."""
    started = time.monotonic()
    from trainjob.signals import StopRequest
    from trainjob.watchdog import Watchdog, exit_stalled

    env = env or Environment.read()
    stop = StopRequest().install()
    output_dir = _output_dir_guess(argv, env)
    fail = functools.partial(_fail, is_main=env.is_main_process)
    try:
        env.check("train")
        from trainjob.config import parse_args
        from trainjob.job import train

        cfg = parse_args(argv, env.variables)
        output_dir = cfg.output_dir
        code_version()  # read now, before training: an edit or commit made during a long run is not its code
        watchdog = Watchdog(cfg.stall_timeout, exit_stalled(output_dir, env.is_main_process)).start()
        try:
            train(cfg, env, stop, started)
        finally:
            watchdog.stop()
        return contract.EXIT_OK
    except UserError as e:
        return fail(output_dir if e.writes_failure_file else None, f"error: {e}", e.exit_code)
    except DivergedError as e:
        return fail(output_dir, f"error: {e}", e.exit_code)
    except Stopped as e:
        return fail(output_dir, str(e), e.exit_code)
    except KeyboardInterrupt:
        return fail(output_dir, "stopped by SIGINT", contract.EXIT_SIGINT)
    except Exception as e:  # noqa: BLE001 -- a bug: keep the whole traceback for the report
        _escaped_traceback(type(e), e, e.__traceback__)
        return fail(output_dir, f"internal error: {type(e).__name__}: {e} (a bug in trainjob: the traceback is in "
                    "the log above; please report it)", contract.EXIT_INTERNAL, echo=False)
    finally:
        stop.uninstall()


def _fail(output_dir: str | None, line: str, code: int, echo: bool = True, is_main: bool = True) -> int:
    from trainjob.outputs import write_failure

    line = printable(line)  # a message may quote a data or model file: one line, no terminal escapes
    if echo:
        print(line, file=sys.stderr, flush=True)
    if is_main:  # one failure.txt, from the main process
        write_failure(output_dir, line)
    return code


def _escaped_traceback(kind, error, tb) -> None:
    """A bug's traceback on stderr, each line escaped: an exception's message may quote a data or model file."""
    for chunk in traceback.format_exception(kind, error, tb):
        for line in chunk.splitlines():
            print(printable(line), file=sys.stderr)
    sys.stderr.flush()


def _escaped_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A library's warning, escaped: it may quote a data or model file (Matplotlib names a glyph it lacks)."""
    for text in warnings.formatwarning(message, category, filename, lineno, line).splitlines():
        print(printable(text), file=file or sys.stderr)


def _output_dir_guess(argv: list[str], env: Environment) -> str:
    """Where failure.txt goes when the flags themselves could not be parsed."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--output_dir")
    known, _ = p.parse_known_args(argv)
    from trainjob.outputs import resolve_output_dir

    return resolve_output_dir(known.output_dir, env.variables)


if __name__ == "__main__":
    main()
