"""Core commands: ``init``, ``add``, ``search``, ``get``, ``history``, ``stats``, ``demo``.

Every command takes the store directory as its first argument. Times (``--valid-at``, ``--as-of``,
``--valid-from``, ``--valid-to``) are ISO-8601 with an offset (``2024-03-01T12:00:00+02:00``, or ``Z``
for UTC); a bare date ``YYYY-MM-DD`` means midnight UTC that day; a time without an offset is an error.
``--json`` prints one JSON document on stdout instead of a table.

Only ``init`` and ``demo`` create stores; the other commands need an existing one (a mistyped path then
fails loudly instead of creating an empty store and silently loading a model).

The parsing helpers (:func:`parse_time`, :func:`parse_tags`, :func:`parse_json_object`) are plain
functions so that other commands can reuse them. ``aether import`` lives in ``_maintenance``
(streaming, resumable; see :mod:`aether.ingest`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from .._time import from_us_strict, to_us
from ..errors import InvalidInputError, InvalidTagError, StoreNotFoundError
from ..models import MemoryAtom
from ._app import console

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

# ---------------------------------------------------------------------------- parsing helpers


def parse_time(text: str, *, name: str = "time") -> datetime:
    """Parse a CLI time: ISO-8601 with an offset (``Z`` accepted), or a bare date as midnight UTC.

    Raises
    ------
    NaiveDatetimeError
        If a date-time has no offset.
    InvalidInputError
        If the text is not a time.
    """
    text = text.strip()
    if _DATE.fullmatch(text):
        try:
            d = date.fromisoformat(text)
        except ValueError:
            raise InvalidInputError(f"{name}: {text!r} is not a valid date") from None
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    return from_us_strict(to_us(text, name=name))


def _opt_time(text: str | None, name: str) -> datetime | None:
    return None if text is None else parse_time(text, name=name)


def parse_tag_value(raw: str) -> Any:
    """A tag value from the command line: a JSON number, true/false or quoted string; else the text."""
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(value, bool | int | float | str):
        return value
    return raw  # null, lists and objects are not tag values: keep the literal text


def parse_tags(items: Sequence[str] | None) -> dict[str, Any]:
    """``["k=v", ...]`` to a tag dict; ``v`` goes through :func:`parse_tag_value`.

    Raises
    ------
    InvalidTagError
        If an item has no ``=`` or an empty key.
    """
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InvalidTagError(f"--tag {item!r}: expected KEY=VALUE")
        out[key.strip()] = parse_tag_value(raw)
    return out


def parse_json_object(text: str, name: str) -> dict[str, Any]:
    """A JSON object given on the command line.

    Raises
    ------
    InvalidInputError
        If the text is not JSON or not an object.
    """
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidInputError(f"{name}: malformed JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InvalidInputError(f"{name}: expected a JSON object, got {type(value).__name__}")
    return value


KeyFileOpt = Annotated[
    Path | None,
    typer.Option("--key-file", metavar="FILE", help="Master key file of an encrypted store (default: AETHER_KEY_FILE "
                 "or AETHER_KEY).", show_default=False),
]


def open_store(path: Path, *, read_only: bool = False, key_file: Path | None = None) -> Any:
    """Open an existing store for a command (the one opener every command module uses)."""
    import aether

    try:
        return aether.open(path, create=False, read_only=read_only, key_file=key_file)
    except StoreNotFoundError:
        raise StoreNotFoundError(f"no aether store at {path}; create one with `aether init {path}`") from None


UrlOpt = Annotated[
    str | None,
    typer.Option("--url", metavar="URL", help="Read from an aether server (`aether serve`) instead of a store "
                 "directory; then leave PATH out.", show_default=False),
]
NamespaceOpt = Annotated[str, typer.Option("--namespace", metavar="NS", help="Namespace on the server (with --url).")]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", metavar="KEY", envvar="AETHER_API_KEY", help="API key for --url (or AETHER_API_KEY).",
                 show_default=False),
]


def _shift(path: Path | None, arg: str | None, url: str | None, what: str) -> tuple[Path | None, str]:
    """With ``--url`` there is no PATH: the one positional argument given is ``what``."""
    if url is None:
        if path is None or arg is None:
            raise InvalidInputError(f"missing PATH or {what} (or give --url URL and {what})")
        return path, arg
    if arg is not None:
        raise InvalidInputError(f"give a store PATH or --url, not both ({path} and {url})")
    if path is None:
        raise InvalidInputError(f"missing {what}")
    return None, str(path)


def _reader(path: Path | None, key_file: Path | None, url: str | None, namespace: str, api_key: str | None) -> Any:
    """A read-only store, or a client of a server namespace (the same read methods)."""
    if url is not None:
        import aether

        return aether.connect(url, api_key=api_key, namespace=namespace)
    assert path is not None
    return open_store(path, read_only=True, key_file=key_file)


def _emit_json(doc: Any) -> None:
    # plain print, not rich: no markup, no wrapping, exactly one JSON document
    typer.echo(json.dumps(doc, ensure_ascii=False, indent=2, default=str))


def _fmt(dt: datetime | None, *, open_text: str = "open") -> str:
    if dt is None:
        return open_text
    dt = dt.astimezone(UTC)
    if dt.hour == dt.minute == dt.second == dt.microsecond == 0:
        return dt.date().isoformat()
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _tags_text(tags: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in tags.items())


def _atom_table(atom: MemoryAtom, title: str | None = None) -> Table:
    table = Table(show_header=False, title=title, box=None, pad_edge=False)
    table.add_column(style="bold cyan")
    table.add_column()
    rows = [
        ("atom_id", atom.atom_id),
        ("content", atom.content.inline),
        ("valid", f"{_fmt(atom.valid_from)} → {_fmt(atom.valid_to)}"),
        ("recorded", f"{_fmt(atom.tx_from)} → {_fmt(atom.tx_to, open_text='current')}"),
        ("tags", _tags_text(atom.tags)),
        ("subject", atom.subject),
        ("version", str(atom.version_id)),
    ]
    if atom.metadata:
        rows.append(("metadata", json.dumps(atom.metadata, ensure_ascii=False)))
    if atom.payload_digest is not None:
        rows += [("content type", str(atom.content_type)), ("size", f"{atom.size_bytes} bytes"),
                 ("payload sha256", atom.payload_digest)]
    elif atom.content.data is not None:
        rows.append(("data", json.dumps(atom.content.data, ensure_ascii=False, sort_keys=True)))
    for key, value in rows:
        table.add_row(key, Text(value))
    return table


def _check_k(k: int) -> None:
    if k < 1:
        raise InvalidInputError("-k must be a positive int")


# ---------------------------------------------------------------------------- commands

StoreArg = Annotated[Path, typer.Argument(help="Store directory.", show_default=False, metavar="PATH")]
OptStoreArg = Annotated[
    Path | None, typer.Argument(help="Store directory (leave out with --url).", show_default=False, metavar="PATH")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")]
TagOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--tag",
        metavar="KEY=VALUE",
        help="KEY=VALUE (repeatable). VALUE is a number or true/false if it parses as one "
        '(quote it, \'"42"\', to force a string); otherwise it is text.',
        show_default=False,
    ),
]
ValidAtOpt = Annotated[
    str | None,
    typer.Option(
        "--valid-at",
        metavar="TIME",
        help="World time the facts must hold at (default now). ISO-8601 with offset, or YYYY-MM-DD (UTC).",
        show_default=False,
    ),
]
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        metavar="TIME",
        help="Transaction time: what the store believed then (default the latest commit). "
        "ISO-8601 with offset, or YYYY-MM-DD (UTC).",
        show_default=False,
    ),
]


def cmd_init(
    path: StoreArg,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            metavar="NAME",
            help="Embedding model: a name from models/ (default all-MiniLM-L6-v2), or hashing / hashing:DIM.",
            show_default=False,
        ),
    ] = None,
    key_file: KeyFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a store at PATH (an existing store is left as is; its model must match --model)."""
    import aether

    from ..embed import embedder_for
    from ..storage.manifest import NAME

    existed = (path / NAME).exists()
    embedder = embedder_for(model) if model is not None else None
    with aether.open(path, embedder=embedder, key_file=key_file) as mem:
        info = {"path": str(path), "model": mem.embedder.identity, "dim": mem.embedder.dim,
                "created": not existed}
    if as_json:
        _emit_json(info)
    elif existed:
        console.print(f"Store already exists at [bold]{path}[/] (model {info['model']})", highlight=False)
    else:
        console.print(f"Created store at [bold]{path}[/] (model {info['model']})", highlight=False)


def cmd_add(
    path: StoreArg,
    text: Annotated[
        str | None, typer.Argument(help="The memory's text (with --file: its caption).", show_default=False,
                                   metavar="TEXT")
    ] = None,
    tag: TagOpt = None,
    valid_from: Annotated[
        str | None,
        typer.Option("--valid-from", metavar="TIME", help="When the fact starts to hold (default now).",
                     show_default=False),
    ] = None,
    valid_to: Annotated[
        str | None,
        typer.Option("--valid-to", metavar="TIME", help="When it stops (default open-ended).", show_default=False),
    ] = None,
    atom_id: Annotated[
        str | None,
        typer.Option("--atom-id", metavar="ID", help="Write a new version of this atom (default: a new atom).",
                     show_default=False),
    ] = None,
    subject: Annotated[
        str,
        typer.Option("--subject", metavar="NAME", help="Owner of the data (a user, tenant or agent; unit of erasure)."),
    ] = "default",
    metadata: Annotated[
        str | None,
        typer.Option("--metadata", metavar="JSON", help="A JSON object stored with the memory (not filtered on).",
                     show_default=False),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", metavar="FILE", help="Store this file's bytes as the memory's payload (an image, "
                     "audio, video...); TEXT or --caption is its text rendering.", show_default=False),
    ] = None,
    caption: Annotated[
        str | None,
        typer.Option("--caption", metavar="TEXT", help="The payload's caption (embedded and searched).",
                     show_default=False),
    ] = None,
    content_type: Annotated[
        str | None,
        typer.Option("--content-type", metavar="TYPE/SUBTYPE",
                     help="The payload's media type (default: guessed from the file name).", show_default=False),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", metavar="JSON", help="A JSON object: a STRUCTURED memory (instead of TEXT).",
                     show_default=False),
    ] = None,
    key_file: KeyFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add one memory to the store at PATH (run `aether init PATH` first)."""
    tags = parse_tags(tag)
    meta = parse_json_object(metadata, "--metadata") if metadata is not None else None
    vf = _opt_time(valid_from, "--valid-from")
    vt = _opt_time(valid_to, "--valid-to")
    if text is not None and caption is not None:
        raise InvalidInputError("give TEXT or --caption, not both")
    content: Any = text if caption is None else caption
    if data is not None:
        if content is not None:
            raise InvalidInputError("give TEXT or --data, not both")
        content = parse_json_object(data, "--data")
    if file is None:
        if content_type is not None:
            raise InvalidInputError("--content-type needs --file")
        if content is None:
            raise InvalidInputError("give the memory's TEXT (or --data JSON, or --file FILE)")
    with open_store(path, key_file=key_file) as mem:
        atom = mem.add(content, tags=tags or None, metadata=meta, valid_from=vf, valid_to=vt, atom_id=atom_id,
                       subject=subject, payload=file, content_type=content_type)
    if as_json:
        _emit_json(atom.to_dict())
    else:
        console.print(_atom_table(atom, title="added"))


def cmd_search(
    path: OptStoreArg,
    query: Annotated[
        str | None, typer.Argument(help="What to look for (natural language).", show_default=False, metavar="QUERY")
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", metavar="N", help="Number of results.")] = 10,
    valid_at: ValidAtOpt = None,
    as_of: AsOfOpt = None,
    tag: TagOpt = None,
    key_file: KeyFileOpt = None,
    url: UrlOpt = None,
    namespace: NamespaceOpt = "default",
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Semantic search: the K memories closest to QUERY, true at --valid-at as known at --as-of."""
    path, query = _shift(path, query, url, "QUERY")
    _check_k(k)
    tags = parse_tags(tag)
    va = _opt_time(valid_at, "--valid-at")
    ao = _opt_time(as_of, "--as-of")
    with _reader(path, key_file, url, namespace, api_key) as mem:
        hits = mem.search(query, k, valid_at=va, as_of=ao, tags=tags or None)
    if as_json:
        _emit_json({
            "query": query,
            "k": k,
            "valid_at": va.isoformat() if va else None,
            "as_of": ao.isoformat() if ao else None,
            "tags": tags,
            "hits": [{"score": h.score, "atom": h.atom.to_dict()} for h in hits],
        })
        return
    title = f"{query!r}  valid at {_fmt(va, open_text='now')}, as of {_fmt(ao, open_text='latest')}"
    table = Table(title=title, title_justify="left")
    for col, kw in (("#", {"justify": "right"}), ("score", {"justify": "right"}), ("content", {}),
                    ("valid", {}), ("tags", {}), ("atom_id", {"style": "dim"})):
        table.add_column(col, **kw)  # type: ignore[arg-type]
    for i, h in enumerate(hits, 1):
        a = h.atom
        table.add_row(str(i), f"{h.score:.3f}", Text(a.content.inline),
                      f"{_fmt(a.valid_from)} → {_fmt(a.valid_to)}", Text(_tags_text(a.tags)), a.atom_id)
    console.print(table if hits else "no results")


def cmd_get(
    path: OptStoreArg,
    atom_id: Annotated[str | None, typer.Argument(help="The atom id.", show_default=False, metavar="ATOM_ID")] = None,
    valid_at: ValidAtOpt = None,
    as_of: AsOfOpt = None,
    key_file: KeyFileOpt = None,
    url: UrlOpt = None,
    namespace: NamespaceOpt = "default",
    api_key: ApiKeyOpt = None,
    payload_out: Annotated[
        Path | None,
        typer.Option("--payload-out", metavar="FILE", help="Write the version's payload bytes to FILE.",
                     show_default=False),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The version of ATOM_ID true at --valid-at as known at --as-of (exit 1 if there is none)."""
    path, atom_id = _shift(path, atom_id, url, "ATOM_ID")
    va = _opt_time(valid_at, "--valid-at")
    ao = _opt_time(as_of, "--as-of")
    if payload_out is not None and url is not None:
        raise InvalidInputError("--payload-out reads a local store (not --url)")
    with _reader(path, key_file, url, namespace, api_key) as mem:
        atom = mem.get(atom_id, valid_at=va, as_of=ao)
        known = atom is not None or bool(mem.history(atom_id))
        if atom is not None and payload_out is not None:
            _write_payload(mem, atom, payload_out)
    if as_json:
        _emit_json(atom.to_dict() if atom is not None else None)
    elif atom is not None:
        console.print(_atom_table(atom))
    if atom is None:
        if not as_json:
            why = "no version is valid then" if known else "no such atom"
            typer.echo(f"{atom_id}: {why} (see `aether history`)", err=True)
        raise typer.Exit(1)


def _write_payload(mem: Any, atom: MemoryAtom, out: Path) -> None:
    """Stream the atom version's payload into ``out`` (via a temp file: no half-written FILE is left)."""
    import os
    import shutil

    from ..errors import NoPayloadError, StorageIOError

    if atom.payload_digest is None:
        raise NoPayloadError(f"atom {atom.atom_id!r} has no payload at those times")
    tmp = out.with_name(out.name + ".part")
    try:
        with mem.open_payload(atom.atom_id, valid_at=atom.valid_from, as_of=atom.tx_from) as src, open(tmp, "wb") as fh:
            shutil.copyfileobj(src, fh, 1 << 20)
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageIOError(exc.errno, f"cannot write {out}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def cmd_history(
    path: OptStoreArg,
    atom_id: Annotated[str | None, typer.Argument(help="The atom id.", show_default=False, metavar="ATOM_ID")] = None,
    key_file: KeyFileOpt = None,
    url: UrlOpt = None,
    namespace: NamespaceOpt = "default",
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every version of ATOM_ID, superseded ones included, ordered by transaction time."""
    from ..errors import AtomNotFoundError

    path, atom_id = _shift(path, atom_id, url, "ATOM_ID")
    with _reader(path, key_file, url, namespace, api_key) as mem:
        versions = mem.history(atom_id)
    if not versions:
        raise AtomNotFoundError(f"no atom {atom_id!r} in {path or url}")
    if as_json:
        _emit_json([a.to_dict() for a in versions])
        return
    console.print(history_table(versions, title=f"history of {atom_id}"))


def history_table(versions: Sequence[MemoryAtom], *, title: str | None = None) -> Table:
    """A rich table of versions: valid interval, recorded interval, and whether still believed."""
    table = Table(title=title, title_justify="left")
    payloads = any(a.payload_digest is not None for a in versions)
    for col in ("version", "content", "valid from", "valid to", "recorded", "superseded"):
        table.add_column(col)
    if payloads:
        table.add_column("payload")
    for a in versions:
        style = None if a.tx_to is None else "dim"
        cells: list[Text | str] = [str(a.version_id), Text(a.content.inline), _fmt(a.valid_from), _fmt(a.valid_to),
                 _fmt(a.tx_from), _fmt(a.tx_to, open_text="—")]
        if payloads:
            cells.append("—" if a.payload_digest is None else
                         f"{a.content_type} {a.size_bytes} B sha256:{a.payload_digest[:12]}")
        table.add_row(*cells, style=style)
    return table


def cmd_stats(
    path: OptStoreArg = None,
    key_file: KeyFileOpt = None,
    url: UrlOpt = None,
    namespace: NamespaceOpt = "default",
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Counts and sizes of the store at PATH (or of a server namespace with --url)."""
    if (path is None) == (url is None):
        raise InvalidInputError("give a store PATH or --url URL")
    with _reader(path, key_file, url, namespace, api_key) as mem:
        stats = mem.stats()
    if as_json:
        _emit_json(stats.model_dump(mode="json"))
        return
    table = Table(show_header=False, box=None, title=f"store {path or url}", title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    for key, value in stats.model_dump().items():
        table.add_row(key, Text(_fmt(value) if isinstance(value, datetime) else str(value)))
    console.print(table)


def cmd_demo(
    path: Annotated[Path, typer.Argument(help="Where to build the demo store.", metavar="PATH")] = Path("demo-store"),
    reset: Annotated[bool, typer.Option("--reset", help="Delete the existing demo store at PATH.")] = False,
) -> None:
    """Build a small dated team knowledge base and show answers changing with valid and transaction time.

    Uses the default model (all-MiniLM-L6-v2, offline). PATH must be new, or an aether store with --reset.
    """
    from ..demo import run_demo

    run_demo(path, reset=reset, console=console)


def register(app: typer.Typer) -> None:
    """Add the core commands to the ``aether`` app."""
    app.command("init")(cmd_init)
    app.command("add")(cmd_add)
    app.command("search")(cmd_search)
    app.command("get")(cmd_get)
    app.command("history")(cmd_history)
    app.command("stats")(cmd_stats)
    app.command("demo")(cmd_demo)


__all__ = [
    "KeyFileOpt",
    "history_table",
    "open_store",
    "parse_json_object",
    "parse_tag_value",
    "parse_tags",
    "parse_time",
    "register",
]
