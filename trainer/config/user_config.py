"""The user-level config: settings that follow a person across projects.

It lives at `$XDG_CONFIG_HOME/loradeck/config.toml` (`~/.config/loradeck/config.toml` when
XDG_CONFIG_HOME is unset); `$LORADECK_CONFIG` names another file. Every key is optional:

    [user]
    name = "maya"                        # shown as "who" in the shared folder (default: login name)

    [export]
    dest = "/mnt/team/loras"             # where `loradeck export` publishes when neither --to nor
                                         # the project's [export] dest says
    on_conflict = "version"              # refuse | version

    [slurm]                              # defaults for `loradeck train --slurm` (trainer.config.slurm_settings)
    partition = "gpu"

A missing file means defaults; a broken one is a ConfigError naming the file.
"""

from __future__ import annotations

import getpass
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from loradeck.trainer.config import slurm_settings
from loradeck.trainer.errors import ConfigError

CONFIG_ENV = "LORADECK_CONFIG"
ON_CONFLICT = ("refuse", "version")
_KNOWN = {"user": {"name"}, "export": {"dest", "on_conflict"}}  # [slurm] has its own schema


@dataclass(frozen=True)
class UserConfig:
    path: Path
    user_name: str = ""
    export_dest: str = ""
    on_conflict: str = ""
    slurm: dict = field(default_factory=dict)  # validated [slurm] table

    @property
    def who(self) -> str:
        """The name written as "who" on published files."""
        if self.user_name:
            return self.user_name
        try:
            return getpass.getuser()
        except (KeyError, OSError):
            return "unknown"


def config_path() -> Path:
    """Where the user config is read from (it may not exist)."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "loradeck" / "config.toml"


def load_user_config(path: Path | None = None) -> UserConfig:
    """Read the user config; defaults when the file does not exist."""
    path = path or config_path()
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return UserConfig(path=path)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the user config ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    unknown = sorted(set(doc) - set(_KNOWN) - {"slurm"})
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(unknown)} (known: user, export, slurm)")
    slurm = slurm_settings.validate(doc["slurm"], str(path)) if "slurm" in doc else {}
    for table, keys in _KNOWN.items():
        section = doc.get(table, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: [{table}] must be a table")
        bad = sorted(set(section) - keys)
        if bad:
            raise ConfigError(f"{path}: unknown key(s) in [{table}]: {', '.join(bad)}")
        for key, value in section.items():
            if not isinstance(value, str):
                raise ConfigError(f"{path}: [{table}] {key} must be text, got {value!r}")
    export = doc.get("export", {})
    on_conflict = export.get("on_conflict", "")
    if on_conflict and on_conflict not in ON_CONFLICT:
        raise ConfigError(f"{path}: [export] on_conflict must be 'refuse' or 'version'")
    return UserConfig(path=path, user_name=doc.get("user", {}).get("name", ""),
                      export_dest=export.get("dest", ""), on_conflict=on_conflict, slurm=slurm)
