"""The table of statutory grounds: loading, linting, resolving by date, hashing and snapshots.

A table is read from a folder of ground files (one YAML file per ground, named after its id) or
from a snapshot (the canonical JSON the ledger stores). Loading checks everything and raises one
:class:`~legal_bases.errors.TableError` that names the file and field of every problem. Lookups
take an explicit date; nothing here reads today's date.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from itertools import pairwise
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from legal_bases.citation import Citation
from legal_bases.errors import GroundNotInForceError, Problem, TableError, UnknownGroundError
from legal_bases.ground import Ground, GroundVersion
from legal_bases.validator import load_yaml, new_validator
from legal_bases.vocabulary import AuthorisationKind, Body, Category, Purpose, ReviewMode

#: The table the product ships.
DEFAULT_GROUNDS_DIR = Path(__file__).parent / "grounds"
SNAPSHOT_FORMAT = 1


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(data: object) -> str:
    """The one text form of JSON data that hashes are taken over (sorted keys, no spaces)."""
    return _CANONICAL.encode(data)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class GroundTable:
    """A loaded, checked table of grounds with its content hash and canonical snapshot."""

    grounds: Mapping[str, Ground]
    hash: str
    snapshot: str
    source: str

    def __post_init__(self) -> None:
        versions = {v.id: v for g in self.grounds.values() for v in g.versions}
        object.__setattr__(self, "_versions", MappingProxyType(versions))

    def __iter__(self) -> Iterator[Ground]:
        return iter(self.grounds[k] for k in sorted(self.grounds))

    def __len__(self) -> int:
        return len(self.grounds)

    def get(self, ground_id: str) -> Ground | None:
        return self.grounds.get(ground_id)

    def resolve(self, ground_id: str, *, on: date) -> GroundVersion:
        """The version of ``ground_id`` in force on ``on``.

        Raises :class:`UnknownGroundError` or :class:`GroundNotInForceError`.
        """
        ground = self.grounds.get(ground_id)
        if ground is None:
            raise UnknownGroundError(ground_id)
        version = ground.version_on(on)
        if version is None:
            raise GroundNotInForceError(ground_id, on)
        return version

    def version(self, version_id: str) -> GroundVersion:
        """A version by its immutable id (as recorded with a decision)."""
        versions: Mapping[str, GroundVersion] = self._versions  # type: ignore[attr-defined]
        try:
            return versions[version_id]
        except KeyError:
            raise UnknownGroundError(version_id) from None


def load_table(directory: Path | str | None = None) -> GroundTable:
    """Load and check every ``*.yaml`` ground file in ``directory`` (default: the shipped table)."""
    folder = Path(directory) if directory is not None else DEFAULT_GROUNDS_DIR
    if not folder.is_dir():
        raise TableError([Problem(str(folder), "(folder)", "is not a folder of ground files")])
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise TableError([Problem(str(folder), "(folder)", "contains no ground files (*.yaml)")])
    problems: list[Problem] = []
    documents: list[tuple[str, dict[str, Any]]] = []
    for path in files:
        name = str(path)
        try:
            raw = load_yaml(path.read_text("utf-8"))
        except OSError as exc:  # a folder or a dangling link named *.yaml, say
            problems.append(Problem(name, "(file)", f"cannot be read: {exc.strerror or exc}"))
            continue
        except (yaml.YAMLError, ValueError) as exc:  # ValueError: not UTF-8, a vast number
            problems.append(Problem(name, "(file)", f"is not valid YAML: {exc}".replace("\n", " ")))
            continue
        document = _check_document(name, raw, problems)
        if document is None:
            continue
        if document["id"] != path.stem:
            problems.append(Problem(name, "id", f"{document['id']!r} must match the file name "
                                                f"{path.stem!r}"))
        documents.append((name, document))
    return _build(documents, problems, source=str(folder))


def _non_text_key(data: Any) -> str | None:
    """The path of the first mapping holding a key that is not a string, or None. Each
    container is looked at once: YAML aliases may share one many times, or nest it in itself."""
    stack: list[tuple[Any, str]] = [(data, "")]
    seen: set[int] = set()
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict | list):
            if id(node) in seen:
                continue
            seen.add(id(node))
        if isinstance(node, dict):
            if any(not isinstance(key, str) for key in node):
                return path
            stack.extend((v, f"{path}.{k}" if path else k) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(node))
    return None


def table_from_snapshot(snapshot: str, *, expected_hash: str | None = None) -> GroundTable:
    """Rebuild a table from the canonical snapshot a ledger stored; checks it like a folder.

    With ``expected_hash`` (the hash recorded beside a decision) a snapshot whose content does
    not hash to it is refused: an altered snapshot can be valid and canonical, but not that.
    """
    try:
        data = json.loads(snapshot)
    except json.JSONDecodeError as exc:
        raise TableError([Problem("(snapshot)", "(snapshot)", f"is not JSON: {exc}")]) from exc
    if not isinstance(data, dict) or data.get("format") != SNAPSHOT_FORMAT:
        raise TableError([Problem("(snapshot)", "format", f"must be {SNAPSHOT_FORMAT}")])
    problems: list[Problem] = []
    documents = []
    for index, raw in enumerate(data.get("grounds") or []):
        name = f"(snapshot ground {index})"
        document = _check_document(name, raw, problems)
        if document is not None:
            documents.append((name, document))
    table = _build(documents, problems, source="snapshot")
    if expected_hash is not None and table.hash != expected_hash:
        raise TableError([Problem("(snapshot)", "(snapshot)",
                                  f"hashes to {table.hash}, not to the recorded {expected_hash}")])
    if table.snapshot != snapshot:
        raise TableError([Problem("(snapshot)", "(snapshot)",
                                  "is not in canonical form; its hash would not match")])
    return table


def _check_document(name: str, raw: object, problems: list[Problem]) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        problems.append(Problem(name, "(file)", "must be a mapping with id, title, legal_basis, "
                                                "requesters, purposes and versions"))
        return None
    where = _non_text_key(raw)
    if where is not None:
        problems.append(Problem(name, where or "(file)", "has a key that is not text (a number, "
                                                         "null or true as a key)"))
        return None
    validator = new_validator("ground", "ground")
    if not validator.validate(raw):
        problems.extend(Problem(name, e.path or "(file)", e.message)
                        for e in validator.field_errors())
        return None
    document: dict[str, Any] = validator.document
    before = len(problems)
    for key in ("requesters", "purposes"):
        _no_repeats(name, key, document[key], problems)
    versions = document["versions"]
    for i, version in enumerate(versions):
        for key in ("categories", "special_categories", "authorisations_required"):
            _no_repeats(name, f"versions.{i}.{key}", version[key], problems)
        if not version["categories"] and not version["special_categories"]:
            problems.append(Problem(name, f"versions.{i}.categories",
                                    "a version must release at least one category"))
        until = version["valid_until"]
        if until is not None and until < version["valid_from"]:
            problems.append(Problem(name, f"versions.{i}.valid_until",
                                    f"{until} is before valid_from {version['valid_from']}"))
    ordered = sorted(range(len(versions)), key=lambda i: versions[i]["valid_from"])
    for prev, nxt in pairwise(ordered):
        prev_until = versions[prev]["valid_until"]
        if prev_until is None or prev_until >= versions[nxt]["valid_from"]:
            problems.append(Problem(
                name, f"versions.{nxt}.valid_from",
                f"overlaps versions.{prev} (in force from {versions[prev]['valid_from']} "
                f"{'without end' if prev_until is None else 'through ' + prev_until})"))
    return document if len(problems) == before else None


def _no_repeats(name: str, key: str, values: list[str], problems: list[Problem]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            problems.append(Problem(name, key, f"{value!r} is listed twice"))
        seen.add(value)


def _canonical_ground(document: dict[str, Any]) -> dict[str, Any]:
    """The semantic content of a ground document: list order and key order do not matter."""
    out = dict(document)
    out["requesters"] = sorted(document["requesters"])
    out["purposes"] = sorted(document["purposes"])
    versions = []
    for version in sorted(document["versions"], key=lambda v: v["valid_from"]):
        v = dict(version)
        for key in ("categories", "special_categories", "authorisations_required"):
            v[key] = sorted(version[key])
        versions.append(v)
    out["versions"] = versions
    return out


def _build(documents: list[tuple[str, dict[str, Any]]], problems: list[Problem], *,
           source: str) -> GroundTable:
    seen: dict[str, str] = {}
    for name, document in documents:
        if document["id"] in seen:
            problems.append(Problem(name, "id", f"{document['id']!r} is also the id in "
                                                f"{seen[document['id']]}"))
        seen.setdefault(document["id"], name)
    if problems:
        raise TableError(problems)
    canonical = sorted((_canonical_ground(d) for _, d in documents), key=lambda d: d["id"])
    snapshot = canonical_json({"format": SNAPSHOT_FORMAT, "grounds": canonical})
    grounds = {d["id"]: _ground(d) for d in canonical}
    return GroundTable(grounds=MappingProxyType(grounds), hash=sha256(snapshot),
                       snapshot=snapshot, source=source)


def _ground(document: dict[str, Any]) -> Ground:
    citation = Citation.from_dict(document["legal_basis"])
    requesters = frozenset(Body(b) for b in document["requesters"])
    purposes = frozenset(Purpose(p) for p in document["purposes"])
    head = {k: v for k, v in document.items() if k != "versions"}
    versions = []
    for v in document["versions"]:
        content_id = sha256(canonical_json({"ground": head, "version": v}))[:12]
        until = v["valid_until"]
        versions.append(GroundVersion(
            id=f"{document['id']}@{v['valid_from']}#{content_id}",
            ground_id=document["id"],
            valid_from=date.fromisoformat(v["valid_from"]),
            valid_until=date.fromisoformat(until) if until else None,
            citation=Citation.from_dict(v["legal_basis"]) if v["legal_basis"] else citation,
            requesters=requesters,
            purposes=purposes,
            categories=frozenset(Category(c) for c in v["categories"]),
            special_categories=frozenset(Category(c) for c in v["special_categories"]),
            case_reference_required=v["case_reference_required"],
            authorisations_required=tuple(AuthorisationKind(a)
                                          for a in v["authorisations_required"]),
            single_subject=v["single_subject"],
            auto_limit=v["auto_limit"],
            review=ReviewMode(v["review"]),
            response_days=v["response_days"],
            pseudonymise=v["pseudonymise"],
        ))
    return Ground(id=document["id"], title=document["title"], citation=citation,
                  requesters=requesters, purposes=purposes, versions=tuple(versions))
