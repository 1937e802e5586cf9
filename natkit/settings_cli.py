"""Command-line flags generated from a pydantic-settings class, so that every setting is
both a ``--flag`` and an environment variable, with one definition.

Flags that are not given are not passed to the settings class, so the environment (and
then the field default) decides them.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return typing.get_origin(annotation) is list


def _is_bool(annotation: Any) -> bool:
    return annotation is bool


def add_settings_arguments(
    parser: argparse.ArgumentParser, settings_cls: type[BaseSettings]
) -> None:
    """Add one ``--flag`` per field of ``settings_cls``."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    for name, field in settings_cls.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = f"{prefix}{name}".upper()
        default = field.get_default(call_default_factory=True)
        shown = ", ".join(map(str, default)) if isinstance(default, list) else default
        help_text = f"{field.description or name} (env {env}; default: {shown})"
        annotation = field.annotation
        if isinstance(annotation, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0] if len(args) == 1 else annotation
        if _is_bool(annotation):
            parser.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        elif _is_list(annotation):
            parser.add_argument(
                flag,
                dest=name,
                action="append",
                default=argparse.SUPPRESS,
                metavar="VALUE",
                help=help_text + "; repeatable",
            )
        else:
            parser.add_argument(
                flag, dest=name, default=argparse.SUPPRESS, metavar="VALUE", help=help_text
            )


def settings_from_args(
    settings_cls: type[S], args: argparse.Namespace, parser: argparse.ArgumentParser
) -> S:
    """Build ``settings_cls`` from the flags given (and the environment); exit 2 with a
    readable message if a value is invalid."""
    given = {k: v for k, v in vars(args).items() if k in settings_cls.model_fields}
    try:
        return settings_cls(**given)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "settings"
            problems.append(f"--{where.split('.')[0].replace('_', '-')}: {error['msg']}")
        parser.error("; ".join(problems))
