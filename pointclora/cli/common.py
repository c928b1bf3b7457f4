"""What every tool shares: the training flags, config loading with checked ``--set``, and one-line user errors.

``run_cli(main_fn, argv)`` turns any exception into one line ``error: ...`` on stderr and exit code 2 (1 for an
unexpected internal error, which names its type); ``--debug`` re-raises with the traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Dict, Optional, Sequence

from ..config import ConfigError

__all__ = [
    "ToolParser",
    "add_config_args",
    "add_training_args",
    "load_cli_config",
    "config_from_args",
    "run_cli",
    "peft_choices",
]


class ToolParser(argparse.ArgumentParser):
    """argparse with the tools' error style: one line ``error: ...`` and exit code 2 (no usage dump)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def peft_choices() -> list:
    """Every registered PEFT method (a method registered by a plugin appears here too)."""
    from ..peft import list_peft_methods

    return list_peft_methods()


def add_config_args(p: argparse.ArgumentParser, cfg_help: str) -> None:
    p.add_argument("--cfg", required=True, help=cfg_help)
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config keys (checked), e.g. --set optim.lr=1e-3 data.batch_size=16")  # fmt: skip
    p.add_argument("--data-root", help="dataset folder (overrides the dataset config's root)")
    p.add_argument("--epochs", type=int, help="sets schedule.epochs")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")


def add_training_args(p: argparse.ArgumentParser, with_peft: bool = True) -> None:
    """The flags of every training tool (finetune, segment, pretrain, fewshot)."""
    if with_peft:
        p.add_argument("--ckpt", help="pre-trained backbone: a file or a shipped backbone's name (model.checkpoint)")
        p.add_argument("--peft", "--method", dest="peft", choices=peft_choices(),
                       help="adapter method (swaps in configs/adapters/<method>.yaml as the peft section)")  # fmt: skip
    p.add_argument("--output", help="run folder (default runs/<config>/<method>-seed<seed>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    p.add_argument("--seed", type=int, help="random seed (sets train.seed)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (sets train.device)")
    p.add_argument("--amp", action="store_true", help="mixed precision: bf16 on CPU, fp16 (GradScaler) on CUDA")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines (log.txt keeps them)")
    p.add_argument("--protocol", choices=["ours", "point-mae"],
                   help="point-mae: the official runner's protocol (train on all of train, best epoch on test, "
                        "max-over-repeats voting, its lr stepping...; docs/PROTOCOL.md), labelled in every "
                        "output")  # fmt: skip


def config_from_args(args: argparse.Namespace, task: Optional[str] = None) -> Dict[str, Any]:
    """The resolved config (:func:`pointclora.api.resolve_config`): file (+ bases), then the flags, then
    ``--protocol``, then ``--set`` overrides (so an explicit override wins over the protocol)."""
    from ..api import resolve_config

    if getattr(args, "resume", False) and not getattr(args, "output", None):
        raise ValueError("--resume needs --output RUN_DIR (the run to continue)")
    flags = {k: getattr(args, k, None) for k in ("ckpt", "protocol", "seed", "device")}
    return resolve_config(args.cfg, args.overrides, task=task, method=getattr(args, "peft", None), epochs=args.epochs,
                          amp=bool(getattr(args, "amp", False)), **flags)  # fmt: skip


def load_cli_config(*args: Any, **kwargs: Any) -> Dict[str, Any]:
    """:func:`pointclora.api.load_cli_config` (kept here for existing callers)."""
    from ..api import load_cli_config as load

    return load(*args, **kwargs)


def _message(err: BaseException) -> str:
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        return err.args[0]  # str(KeyError) would wrap the sentence in quotes
    text = str(err).strip() or type(err).__name__
    return " ".join(text.split())  # one line


#: Exceptions that report a user's mistake (bad file, key, value, state): `error: <message>`, exit 2.
def _user_errors() -> tuple:
    from ..engine.runlock import RunLockedError
    from ..engine.weights import WeightsError
    from ..models.checkpoint import CheckpointError

    errs = [ConfigError, ValueError, KeyError, FileNotFoundError, FileExistsError, IsADirectoryError,
            NotADirectoryError, PermissionError, RunLockedError, CheckpointError, WeightsError]  # fmt: skip
    try:
        from ..peft.io import AdapterMismatchError

        errs.append(AdapterMismatchError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


def run_cli(body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
            argv: Optional[Sequence[str]] = None) -> int:  # fmt: skip
    """Parse ``argv`` and run ``body(args)``; every error becomes one ``error:`` line (``--debug``: traceback)."""
    args = parser.parse_args(argv)
    try:
        return int(body(args) or 0)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the one place a tool turns errors into a message
        if getattr(args, "debug", False):
            raise
        if isinstance(err, _user_errors()):
            print(f"error: {_message(err)}", file=sys.stderr)
            return 2
        print(f"error: internal error ({type(err).__name__}: {_message(err)}); rerun with --debug for the traceback",
              file=sys.stderr)  # fmt: skip
        return 1
