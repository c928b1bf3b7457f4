"""What every tool shares: the training flags, config loading with checked ``--set``, and one-line user errors.

``run_cli(main_fn, argv)`` turns any exception into one line ``error: ...`` on stderr and exit code 2 (1 for an
unexpected internal error, which names its type); ``--debug`` re-raises with the traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Dict, Optional, Sequence

from ..config import ConfigError, apply_overrides, load_config, load_yaml, resolve_config_path

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


def _adapter_section(method: str) -> Dict[str, Any]:
    try:
        data = load_yaml(resolve_config_path(f"adapters/{method}.yaml"))
        return dict(data.get("peft", {"method": method}))
    except ConfigError:
        return {"method": method}


def load_cli_config(cfg_path: str, overrides: Sequence[str] = (), method: Optional[str] = None,
                    ckpt: Optional[str] = None, epochs: Optional[int] = None, task: Optional[str] = None
                    ) -> Dict[str, Any]:  # fmt: skip
    """Load ``cfg_path`` (+ bases), swap in ``method``'s own adapter defaults, set the backbone checkpoint and epochs,
    then apply ``--set`` overrides (checked against the schema)."""
    cfg = load_config(cfg_path)
    if task is not None:
        cfg["task"] = task
    if method and method != cfg["peft"].get("method"):
        cfg["peft"] = _adapter_section(method)
    if ckpt:
        cfg["model"]["checkpoint"] = ckpt
    if epochs is not None:
        cfg["schedule"]["epochs"] = epochs
    from ..tasks.backbone_settings import apply_shipped_backbone

    changes = apply_shipped_backbone(cfg)  # a shipped backbone's variant, tokenizer, points (--set still wins)
    if changes:
        print(f"backbone {cfg['model']['checkpoint']}: " + "; ".join(changes) + " (as it was pre-trained)",
              file=sys.stderr)  # fmt: skip
    return apply_overrides(cfg, overrides)


#: tasks as ``engine.protocol`` names them
_PROTOCOL_TASK = {"classification": "classification", "part_segmentation": "segmentation",
                  "mae_pretraining": "pretrain"}  # fmt: skip


def config_from_args(args: argparse.Namespace, task: Optional[str] = None) -> Dict[str, Any]:
    """The resolved config: file (+ bases), then the flags, then ``--protocol``, then ``--set`` overrides (so an
    explicit override wins over the protocol)."""
    if getattr(args, "resume", False) and not getattr(args, "output", None):
        raise ValueError("--resume needs --output RUN_DIR (the run to continue)")
    cfg = load_cli_config(args.cfg, method=getattr(args, "peft", None), ckpt=getattr(args, "ckpt", None),
                          epochs=args.epochs, task=task)  # fmt: skip
    protocol = getattr(args, "protocol", None) or cfg.get("protocol")
    if protocol and protocol != "ours":
        from ..engine.protocol import apply_protocol

        cfg = apply_protocol(cfg, protocol, _PROTOCOL_TASK.get(str(cfg.get("task")), "classification"))
    if getattr(args, "seed", None) is not None:
        cfg["train"]["seed"] = args.seed
    if getattr(args, "device", None):
        cfg["train"]["device"] = args.device
    if getattr(args, "amp", False):
        cfg["train"]["amp"] = True
    return apply_overrides(cfg, args.overrides)


def _message(err: BaseException) -> str:
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        return err.args[0]  # str(KeyError) would wrap the sentence in quotes
    text = str(err).strip() or type(err).__name__
    return " ".join(text.split())  # one line


#: Exceptions that report a user's mistake (bad file, key, value, state): `error: <message>`, exit 2.
def _user_errors() -> tuple:
    from ..engine.runlock import RunLockedError
    from ..models.checkpoint import CheckpointError

    errs = [ConfigError, ValueError, KeyError, FileNotFoundError, FileExistsError, IsADirectoryError,
            NotADirectoryError, PermissionError, RunLockedError, CheckpointError]  # fmt: skip
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
