"""What the command-line entry points share: expected failures end in one line, not a traceback;
a setting left out or mistyped is named with its fix; long work says where it is."""

from __future__ import annotations

import contextlib
import difflib
import os
import sys
from collections.abc import Callable, Iterable, Iterator

from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf


@contextlib.contextmanager
def one_line_errors(*kinds: type[BaseException]):
    """Bad input, bad settings or a missing device (ValueError, RuntimeError, OSError unless
    `kinds` says otherwise; our ImageError and ModelFileError are ValueErrors) end the command
    with `error: <message>` on stderr and exit status 1. The messages name the file or setting
    and the fix, which a traceback would bury."""
    expected = kinds or (ValueError, RuntimeError, OSError)
    try:
        yield
    except expected as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def run(main: Callable[[], object]) -> None:
    """Run a @hydra.main function. An override Hydra refuses (`style.style_wieght=1`: no such key)
    ends in one line naming the closest known key, instead of Hydra's advice to add the typo
    with `+`. Hydra prints its own report and exits unless HYDRA_FULL_ERROR is set, so it is set
    while the command runs; a user who set it gets Hydra's full error as before."""
    user_set = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except ConfigCompositionException as e:
        if user_set:
            raise
        print(f"error: {composition_message(e)}", file=sys.stderr)
        sys.exit(1)
    finally:
        if user_set is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)


def composition_message(e: ConfigCompositionException) -> str:
    """Hydra's composition error in one line; an unknown key gets the closest known one."""
    cause = e.__cause__
    parent, key = getattr(cause, "parent_node", None), getattr(cause, "key", None)
    full_key = getattr(cause, "full_key", None)
    if isinstance(parent, DictConfig) and isinstance(key, str) and full_key:
        return unknown_key_message(full_key, [k for k in parent if k != key])
    text = str(e).split("Config search path")[0]  # where Hydra looked: noise to a user
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def unknown_key_message(full_key: str, known: Iterable[str]) -> str:
    where, _, name = full_key.rpartition(".")
    known = [str(k) for k in known if not str(k).startswith("_")]
    close = difflib.get_close_matches(name, known, n=1)
    prefix = f"{where}." if where else ""
    hint = f"did you mean {prefix}{close[0]}?" if close else \
        f"the settings{f' of {where}' if where else ''} are {', '.join(known)}"
    return f"{full_key} is not a setting: {hint}"


def missing_keys(cfg: DictConfig, prefix: str = "") -> Iterator[str]:
    """Keys still `???`, without resolving interpolations (Hydra's own section left out)."""
    for key in cfg:
        if not prefix and key == "hydra":
            continue
        node = cfg._get_node(key)
        if OmegaConf.is_missing(cfg, key):
            yield f"{prefix}{key}"
        elif isinstance(node, DictConfig):
            yield from missing_keys(node, f"{prefix}{key}.")


def check_required(cfg: DictConfig) -> None:
    """A required setting (`???` in the config) that the command line did not give is a
    ValueError naming all of them, before any work."""
    missing = list(missing_keys(cfg))
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ValueError(f"{', '.join(missing)} {verb} required: add "
                         f"{' '.join(f'{k}=...' for k in missing)} to the command")


def check_added_keys(cfg: DictConfig, overrides: Iterable[str], groups: Iterable[str]) -> None:
    """Raise ValueError for a `+group.key=value` that looks like a typo of a known key.

    groups: the groups checked. In a group or a _target_ node an added key close to a known one
    fails; in a group with no _target_ (style), any added key. Data mappings (loss.style_layers)
    and nodes removed and added again (`~node '+node={...}'`) are left alone."""
    overrides = list(overrides)
    removed = {o[1:].split("=", 1)[0] for o in overrides if o.startswith("~")}
    for o in overrides:
        if not o.startswith("+") or o.startswith("++"):
            continue
        key = o[1:].split("=", 1)[0]
        if key in removed or key.split(".")[0] not in groups:
            continue
        where, _, name = key.rpartition(".")
        parent = OmegaConf.select(cfg, where) if where else None
        if not isinstance(parent, DictConfig):
            continue
        if where not in groups and "_target_" not in parent:
            continue  # a mapping whose keys are data (+loss.style_layers.relu5_3=1): not settings
        known = [k for k in parent if k != name and not str(k).startswith("_")]
        if difflib.get_close_matches(name, known, n=1) or "_target_" not in parent:
            raise ValueError(unknown_key_message(key, known) + " (+ adds a new key)")
