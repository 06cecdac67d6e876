"""The one validation layer for files a user writes, and the one formatter of its errors.

Every config class of a user file (study, proxy config, constraints, mixture, ...) is declared once, with
:func:`config`: a pydantic v2 dataclass that forbids unknown keys. Scalars are strict: ``Text``/``Flag`` are
pydantic's strict str/bool, and :func:`Number` is our own check (ints and floats, never bools or strings,
finite, within bounds), so the ``not isinstance(x, bool)`` guard lives here and nowhere else. Containers and
nested sections are lax on purpose: a YAML mapping must become a nested dataclass (pydantic's strict mode
would demand an instance).

Whatever goes wrong, :func:`format_error` turns pydantic's error list into the project's one line, naming the
field path as it is written in the file (``domains[0].weight``, ``max.web``), e.g.
``--constraints c.yaml: max_epochs: expected a number, got 'four'``. Building a config class directly in
code (``Constraints(max={"web": 1.5})``) raises the same :class:`ConfigError`. See docs/DECISIONS.md (45).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import types
import typing
from numbers import Integral, Real
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import ConfigDict, Discriminator, StrictBool, StrictStr, Tag, TypeAdapter, ValidationError
from pydantic import with_config as _with_config
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic.functional_validators import BeforeValidator, PlainValidator
from pydantic_core import PydanticCustomError

from regmix_plugin.errors import ConfigError, RegmixError

Text = StrictStr
Flag = StrictBool

# Unknown keys are refused; scalar strictness comes from the field types (see the module docstring).
_PYDANTIC_CONFIG = ConfigDict(extra="forbid", strict=False, arbitrary_types_allowed=True)
_ERROR = "regmix"  # the error type of our own checks: its message is final, the formatter only adds the path
_SCALAR, _MAPPING = "<scalar>", "<mapping>"  # union branch tags; pydantic puts them in the path, we drop them


def _fail(message: str) -> PydanticCustomError:
    return PydanticCustomError(_ERROR, "{message}", {"message": message})


def _bounds(ge, gt, le, lt) -> str:
    if ge is not None and le is not None:
        return f" in [{ge:g}, {le:g}]"
    if ge is not None and lt is not None:
        return f" in [{ge:g}, {lt:g})"
    if gt is not None and lt is not None:
        return f" strictly between {gt:g} and {lt:g}"
    parts = [f"{op} {v:g}" for op, v in ((">=", ge), (">", gt), ("<=", le), ("<", lt)) if v is not None]
    return (" " + " and ".join(parts)) if parts else ""


def Number(*, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
           integer: bool = False, expect: str | None = None, says: str | None = None,
           parse_str: bool = False, cast: bool = False) -> Any:
    """A finite number (an int when ``integer``) within bounds; never a bool (YAML's ``yes`` is not 1).

    A value of the wrong kind reads ``expected a number, got 'four'``. A number out of range reads ``says``
    formatted with ``value`` (its repr), ``expect`` (``"a number >= 0"``, or the ``expect`` given) and
    ``bound`` (``">= 0"``); the default is ``expected {expect}, got {value}``. The value is kept as written
    (an int stays an int: digests of configs hash it) unless ``cast`` makes it a float. ``parse_str`` accepts
    numbers PyYAML leaves as strings (``1e-3`` without a dot)."""
    kind = "an integer" if integer else "a number"
    bound = _bounds(ge, gt, le, lt).strip()
    expect = expect or f"{kind} {bound}".strip()
    says = says or "expected {expect}, got {value}"

    def check(v: Any) -> Any:
        if v is None:
            raise _fail(f"null is not allowed; give {kind}")
        if parse_str and isinstance(v, str) and not integer:
            try:
                v = float(v)
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, Integral if integer else Real) or not math.isfinite(v):
            raise _fail(f"expected {kind}, got {_show(v)}")
        if ((ge is not None and v < ge) or (gt is not None and v <= gt)
                or (le is not None and v > le) or (lt is not None and v >= lt)):
            raise _fail(says.format(value=repr(v), expect=expect, bound=bound))
        return float(v) if cast else v

    return Annotated[int if integer else float, PlainValidator(check, json_schema_input_type=int if integer else float)]


def _reported(check: Any) -> Any:
    """``check`` with its RegmixError turned into our pydantic error (so the path gets added)."""

    def run(v: Any) -> Any:
        try:
            return check(v)
        except RegmixError as e:
            raise _fail(str(e)) from None

    return run


def Checked(check: Any, input_type: Any = Any) -> Any:
    """A field checked by ``check(value) -> value``, which raises a RegmixError whose message says what is
    wrong without the field path (the formatter adds it). For rules a bound cannot say (a prefix ends in
    .bin)."""
    return Annotated[input_type, PlainValidator(_reported(check))]


def BeforeChecked(check: Any) -> BeforeValidator:
    """Like :func:`Checked`, run before the field's type: to reshape a value (a string where a list goes)."""
    return BeforeValidator(_reported(check))


def Choice(*names: Any, says: str | None = None) -> Any:
    """One of a fixed list of values; the error lists them (DESIGN: choices are validated against the list).
    Values may be bools too (``true, false or auto``); 1 is not true. A single callable instead of the values
    is asked for them at each check: the names of a registry that plug-ins extend (``Choice(backends.names)``)."""

    def check(v: Any) -> Any:
        choices = names[0]() if len(names) == 1 and callable(names[0]) else names
        if not any(type(v) is type(n) and v == n for n in choices):
            listed = ", ".join("true" if n is True else "false" if n is False else str(n) for n in choices)
            raise _fail((says or "unknown value {value}; choose one of {names}").format(value=_show(v), names=listed))
        return v

    return Annotated[Any, PlainValidator(check)]


def _path(v: Any) -> Path:
    if isinstance(v, os.PathLike) or (isinstance(v, str) and v.strip()):
        return Path(v)
    raise _fail(f"expected a path string, got {_show(v)}")


# A path as written in the file; the loader resolves it against the file's folder.
PathText = Annotated[Path, PlainValidator(_path, json_schema_input_type=str)]

# true, false or auto: a switch whose default the code decides
Switch = Choice(True, False, "auto", says="expected true, false or auto, got {value}")


def either(scalar: Any, container: Any) -> Any:
    """A scalar or a container (``max_epochs: 4`` or ``max_epochs: {web: 2}``; ``nonzero: all`` or a list):
    the input's shape picks the branch, so an error reports that branch's problem only, not one per branch."""
    return Annotated[
        Union[Annotated[scalar, Tag(_SCALAR)], Annotated[container, Tag(_MAPPING)]],
        Discriminator(lambda v: _MAPPING if isinstance(v, (dict, list)) else _SCALAR),
    ]


def config(cls: type | None = None, *, allowed: str = "allowed: ", prefix: str = "",
           error: type[RegmixError] = ConfigError, frozen: bool = False) -> Any:
    """Declare a config class: a pydantic dataclass (so ``dataclasses.fields/asdict/replace`` keep working)
    whose constructor raises :class:`ConfigError` with the one-line message. ``allowed`` introduces the list
    of keys in an unknown-key error (studies say ``allowed:``, proxy configs ``allowed keys are``); ``prefix``
    is the section's key in its file (``synthesize``), put before field paths when the class is built alone;
    ``error`` is the exception raised (a mixture raises MixtureError, still a RegmixError)."""

    def wrap(cls: type) -> type:
        cls = pydantic_dataclass(cls, config=_PYDANTIC_CONFIG, frozen=frozen)
        cls.__regmix_allowed__ = allowed
        cls.__regmix_error__ = error
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            try:
                init(self, *args, **kwargs)
            except ValidationError as e:
                raise error(format_error(e, type(self), prefix)) from None

        cls.__init__ = __init__
        return cls

    return wrap(cls) if cls is not None else wrap


def with_config(tp: type) -> type:
    """For a ``TypedDict`` section that stays a plain dict in code: unknown keys are refused there too."""
    return _with_config(_PYDANTIC_CONFIG)(tp)


def _is_section(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp) or typing.is_typeddict(tp)


def _keys(tp: Any) -> list[str]:
    if dataclasses.is_dataclass(tp):
        return [f.name for f in dataclasses.fields(tp) if f.init]
    return list(typing.get_type_hints(tp))


@functools.cache
def _adapter(tp: Any) -> TypeAdapter:
    return TypeAdapter(tp, config=None if _is_section(tp) else _PYDANTIC_CONFIG)


def validate(tp: Any, data: Any, where: str | None = None, prefix: str = "") -> Any:
    """Validate ``data`` (parsed YAML/JSON) as ``tp``; any problem is a ConfigError of one line, prefixed by
    ``where`` (usually the file) when given. ``prefix``: the key ``data`` sits under in its file, if any."""
    try:
        return _adapter(tp).validate_python(data)
    except ValidationError as e:
        message = format_error(e, tp, prefix)
    except RegmixError as e:  # a cross-field check in a __post_init__: its message names its fields
        message = str(e)
    error = getattr(tp, "__regmix_error__", ConfigError)
    raise error(f"{where}: {message}" if where else message)


def read_yaml_file(path: str | os.PathLike, label: str, what: str = "file", remedy: str = "check the path",
                   error: type[RegmixError] = ConfigError) -> Any:
    """The parsed YAML of a file a user wrote (None when it is empty), or ``error`` with one line:
    ``{label}: {what} not found; {remedy}`` when it is missing, ``{label}: not valid YAML (line N: problem);
    fix the syntax`` when it does not parse, ``{label}: cannot read (...)`` when it is no readable text file.

    ``label`` names the file as the user gave it (``--constraints c.yaml``, or just the path). The one reader
    of user-written YAML (study, schedule, proxy config, constraints, sampler settings); tool-written JSON
    has :func:`regmix_plugin.io.read_json_file`."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{label}: {what} not found; {remedy}") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise error(f"{label}: cannot read ({reason}); give a UTF-8 YAML file") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise error(f"{label}: not valid YAML ({where}{problem}); fix the syntax") from None
    except RecursionError:  # absurd nesting
        raise error(f"{label}: not valid YAML (nested too deeply); fix the syntax") from None


def _loc_text(loc: tuple, prefix: str = "") -> str:
    """``('domains', 0, 'weight')`` -> ``domains[0].weight``: the path as a person reads it in the file."""
    out = prefix
    for part in loc:
        if part in (_SCALAR, _MAPPING):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif not (part and part.isprintable() and part.strip() == part):  # a key of spaces or a newline: quote it
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else part
    return out or "<root>"


def _class_at(tp: Any, loc: tuple) -> Any:
    """The config class that ``loc`` points into (for an unknown-key error), or None."""
    for part in loc:
        tp = _unwrap(tp, part)
        if tp is None:
            return None
    tp = _unwrap(tp, None)
    return tp if _is_section(tp) else None


def _unwrap(tp: Any, part: Any) -> Any:
    """One step down the type: a dataclass field, a dict value, a list item; unions give their dataclass."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            tp = next((a for a in map(_strip, typing.get_args(tp)) if _is_section(a)), None)
        else:
            break
    if part is None or part in (_SCALAR, _MAPPING):
        return tp
    if _is_section(tp):
        return typing.get_type_hints(tp, include_extras=True).get(part)
    if typing.get_origin(tp) in (dict, list):
        return typing.get_args(tp)[-1]
    return None


def _strip(tp: Any) -> Any:
    return typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp


_KINDS = {
    "string_type": "a string", "bool_type": "true or false", "dict_type": "a mapping", "list_type": "a list",
    "dataclass_type": "a mapping", "model_type": "a mapping", "int_type": "an integer", "float_type": "a number",
    "bool_parsing": "true or false", "int_parsing": "an integer", "float_parsing": "a number",
}


def format_error(error: ValidationError, root: Any, prefix: str = "") -> str:
    """The first of pydantic's errors as one line: ``<field path>: <what is wrong>; <how to fix it>``."""
    err = error.errors(include_url=False)[0]
    loc, kind = tuple(err["loc"]), err["type"]
    field_path = functools.partial(_loc_text, prefix=prefix)
    if "[key]" in loc:  # a mapping key of the wrong type (YAML reads `1:` as an int): name the mapping
        at = loc.index("[key]")
        return f"{field_path(loc[:at - 1])}: key {loc[at - 1]!r}: expected a name; quote it"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        cls = _class_at(root, loc[:-1])
        if cls is None:
            return f"{field_path(loc)}: unknown key"
        known = ", ".join(_keys(cls))
        return f"{field_path(loc)}: unknown key; {getattr(cls, '__regmix_allowed__', 'allowed: ')}{known}"
    if kind == _ERROR:
        return f"{field_path(loc)}: {err['ctx']['message']}"
    if kind in ("missing", "missing_argument"):
        cls = _class_at(root, loc[:-1])
        needed = [f.name for f in dataclasses.fields(cls) if f.init and f.default is dataclasses.MISSING
                  and f.default_factory is dataclasses.MISSING] if dataclasses.is_dataclass(cls) else []
        return f"{field_path(loc)}: missing; add it" + (f" (required: {', '.join(needed)})" if needed else "")
    if err.get("input") is None and kind in _KINDS:
        return f"{field_path(loc)}: null is not allowed; give {_KINDS[kind]}"
    if kind in _KINDS:
        return f"{field_path(loc)}: expected {_KINDS[kind]}, got {_show(err.get('input'))}"
    return f"{field_path(loc)}: {err['msg'][0].lower() + err['msg'][1:]}, got {_show(err.get('input'))}"


def _show(value: Any) -> str:
    """A value for an error line: short, one line (a whole mapping would not be)."""
    if isinstance(value, (dict, list)):
        return type(value).__name__
    text = repr(value)
    return text if len(text) <= 60 and "\n" not in text else text[:57].replace("\n", " ") + "..."
