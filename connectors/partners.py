"""The partner organisations, as configuration (DESIGN.md section 4): a YAML file, not code.

Each entry has an ``id`` (a slug), a display ``name``, its ``body`` (one of the requesting
bodies), its ``oin``, optionally a ``delivery`` block and ``api_keys`` (hashes only). A partner
without a delivery block gets a file drop. Example::

    - id: gemeente-utrecht
      name: Gemeente Utrecht
      body: gemeente
      oin: "00000001002220647000"
    - id: cbs
      name: Centraal Bureau voor de Statistiek
      body: cbs
      oin: "00000001003214345000"
      delivery:
        kind: https
        url: https://levering.cbs.example/duo
        client_cert: certs/duo-client.pem     # relative to the configuration file
        verify: certs/pkio-root.pem

:func:`load_partners` reads and checks the whole file (schema ``connectors/schemas/partner.yaml``)
and raises :class:`~connectors.errors.PartnerConfigError` naming the file and field of every
problem, or returns a :class:`PartnerDirectory`. :func:`destination_for` turns a partner's delivery
configuration into its :class:`~connectors.destinations.Destination`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import requests
import structlog
import yaml

from connectors.destinations import Destination, FileDrop, HttpsDestination
from connectors.errors import DestinationConfigError, PartnerConfigError, UnknownPartnerError
from legal_bases.errors import Problem
from legal_bases.identifiers import oin_problem
from legal_bases.validator import DisclosureValidator, load_yaml
from legal_bases.vocabulary import Body

SCHEMA_FILE = Path(__file__).parent / "schemas" / "partner.yaml"
#: Shortest and longest stored API key hash, in characters.
MIN_API_KEY_HASH_LENGTH = 32
MAX_API_KEY_HASH_LENGTH = 512

_SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_NO_SPACE = re.compile(r"^\S+$")


class PartnerValidator(DisclosureValidator):
    """The project's validator with the checks of the partner configuration.

    ``_check_with_oin`` belongs in :class:`legal_bases.validator.DisclosureValidator` (the OIN
    shape is a domain check like the BSN's); it lives here until it is moved there.
    """

    def _check_with_oin(self, field: str, value: object) -> None:
        problem = oin_problem(value)
        if problem is not None:
            self._domain_error(field, "invalid_oin", problem)

    def _check_with_slug(self, field: str, value: object) -> None:
        if isinstance(value, str) and not _SLUG.match(value):
            self._domain_error(field, "bad_format", f"{value!r} is not a slug: lowercase letters "
                                                    "and digits, words joined by '-'")

    def _check_with_https_url(self, field: str, value: object) -> None:
        if not isinstance(value, str):
            return
        match = re.match(r"^https://([^/\s?#@]+)(/\S*)?$", value)
        if match is None:
            self._domain_error(field, "bad_url", "must be an https:// URL with a host "
                                                 "(and no credentials)")

    def _check_with_api_key_hash(self, field: str, value: object) -> None:
        if not isinstance(value, str):
            return
        if not (MIN_API_KEY_HASH_LENGTH <= len(value) <= MAX_API_KEY_HASH_LENGTH
                and _NO_SPACE.match(value)):
            self._domain_error(field, "bad_api_key_hash",
                               f"must be the hash of an API key ({MIN_API_KEY_HASH_LENGTH} to "
                               f"{MAX_API_KEY_HASH_LENGTH} characters, no spaces), never a key")

    def _check_with_delivery(self, field: str, value: object) -> None:
        if not isinstance(value, dict):
            return
        base = self._path(field)
        kind = value.get("kind")
        if kind == "https" and "url" not in value:
            self._record(f"{base}.url", "required", "is required when kind is https")
            self._error(field, "url is required when kind is https")
        elif kind == "file_drop":
            for extra in ("url", "client_cert", "client_key", "verify"):
                if extra in value:
                    self._record(f"{base}.{extra}", "not_allowed",
                                 "applies only to kind https, not to file_drop")
                    self._error(field, f"{extra} applies only to kind https")
        if "client_key" in value and "client_cert" not in value:
            self._record(f"{base}.client_key", "not_allowed", "needs client_cert beside it")
            self._error(field, "client_key needs client_cert")


@cache
def _schema() -> dict[str, Any]:
    loaded: dict[str, Any] = load_yaml(SCHEMA_FILE.read_text("utf-8"))
    return loaded


def new_partner_validator() -> PartnerValidator:
    """A fresh validator for partner entries (validators are not thread-safe: one per load)."""
    return PartnerValidator(_schema())


# -- typed configuration ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FileDropDelivery:
    """Deliveries are written to the partner's folder under the file-drop root."""

    kind: ClassVar[str] = "file_drop"


@dataclass(frozen=True, slots=True)
class HttpsDelivery:
    """Deliveries are POSTed to the partner's https endpoint."""

    kind: ClassVar[str] = "https"
    url: str
    client_cert: Path | None = None
    client_key: Path | None = None
    verify: bool | Path = True


DeliveryConfig = FileDropDelivery | HttpsDelivery


@dataclass(frozen=True, slots=True)
class Partner:
    """One partner organisation: who it is (id, name, body, OIN) and where its deliveries go."""

    id: str
    name: str
    body: Body
    oin: str
    delivery: DeliveryConfig = field(default_factory=FileDropDelivery)
    api_key_hashes: tuple[str, ...] = field(default=(), repr=False)


class PartnerDirectory:
    """The configured partners, found by id or by OIN."""

    def __init__(self, partners: Iterable[Partner], *, source: str = "") -> None:
        self.source = source
        self._by_id: dict[str, Partner] = {}
        self._by_oin: dict[str, Partner] = {}
        for partner in partners:
            if partner.id in self._by_id or partner.oin in self._by_oin:
                raise PartnerConfigError([Problem(source or "(partners)", partner.id,
                                                  "id or OIN is configured twice")])
            self._by_id[partner.id] = partner
            self._by_oin[partner.oin] = partner

    def by_id(self, partner_id: str) -> Partner:
        """The partner with this id; :class:`UnknownPartnerError` if there is none."""
        try:
            return self._by_id[partner_id]
        except KeyError:
            raise UnknownPartnerError("id", partner_id) from None

    def by_oin(self, oin: str) -> Partner:
        """The partner with this OIN; :class:`UnknownPartnerError` if there is none."""
        try:
            return self._by_oin[oin]
        except KeyError:
            raise UnknownPartnerError("OIN", oin) from None

    def get(self, partner_id: str) -> Partner | None:
        """The partner with this id, or None."""
        return self._by_id.get(partner_id)

    @property
    def ids(self) -> list[str]:
        return list(self._by_id)

    def __iter__(self) -> Iterator[Partner]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, partner_id: object) -> bool:
        return partner_id in self._by_id

    def __repr__(self) -> str:
        return f"PartnerDirectory({len(self)} partner(s) from {self.source or '(code)'})"


# -- loading ------------------------------------------------------------------------------------

def load_partners(path: Path | str) -> PartnerDirectory:
    """Read and check the partner configuration at ``path`` (a YAML list of partners).

    Raises :class:`PartnerConfigError` listing every problem, each with the file and the field
    (``<index>.<field>``, with the partner's id in the message where it has one).
    """
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "is not UTF-8 text"
        raise PartnerConfigError([Problem(name, "(file)", f"cannot be read: {reason}")]) from None
    try:
        document = load_yaml(text)
    except yaml.YAMLError as exc:
        message = f"is not valid YAML: {exc}".replace("\n", " ")
        raise PartnerConfigError([Problem(name, "(file)", message)]) from None
    partners, problems = parse_partners(document, file=name, base=path.parent)
    if problems:
        raise PartnerConfigError(problems)
    directory = PartnerDirectory(partners, source=name)
    structlog.get_logger("disclosure.connectors").info("partners_loaded", source=path,
                                                       partners=len(directory))
    return directory


def parse_partners(document: object, *, file: str,
                   base: Path) -> tuple[list[Partner], list[Problem]]:
    """The partners of a parsed configuration document, and every problem found in it.

    ``base`` is the folder relative paths (client certificates, CA bundles) are resolved against.
    """
    if not isinstance(document, list):
        return [], [Problem(file, "(file)", "must be a YAML list of partners")]
    partners: list[Partner] = []
    problems: list[Problem] = []
    first_index: dict[tuple[str, str], int] = {}
    validator = new_partner_validator()
    for index, entry in enumerate(document):
        if not isinstance(entry, dict):
            problems.append(Problem(file, str(index), "must be a mapping with id, name, body, oin"))
            continue
        label = f" (partner {entry['id']!r})" if isinstance(entry.get("id"), str) else ""
        if not validator.validate(entry):
            problems.extend(Problem(file, f"{index}.{e.path}" if e.path else str(index),
                                    f"{e.message}{label}")
                            for e in validator.field_errors())
        for key in ("id", "oin"):
            value = entry.get(key)
            if isinstance(value, str):
                if (key, value) in first_index:
                    problems.append(Problem(file, f"{index}.{key}",
                                            f"duplicate {key} {value!r}, already used by entry "
                                            f"{first_index[(key, value)]}"))
                else:
                    first_index[(key, value)] = index
        if not problems:
            partners.append(_partner(entry, base))
    return partners, problems


def _partner(entry: dict[str, Any], base: Path) -> Partner:
    return Partner(id=entry["id"], name=entry["name"], body=Body(entry["body"]), oin=entry["oin"],
                   delivery=_delivery(entry.get("delivery"), base),
                   api_key_hashes=tuple(entry.get("api_keys") or ()))


def _delivery(raw: dict[str, Any] | None, base: Path) -> DeliveryConfig:
    if raw is None or raw["kind"] == "file_drop":
        return FileDropDelivery()

    def resolve(value: str | None) -> Path | None:
        return None if value is None else (base / value)

    verify = raw.get("verify", True)
    return HttpsDelivery(url=raw["url"], client_cert=resolve(raw.get("client_cert")),
                         client_key=resolve(raw.get("client_key")),
                         verify=verify if isinstance(verify, bool) else base / verify)


# -- destinations -------------------------------------------------------------------------------

def destination_for(partner: Partner, *, drop_root: Path,
                    session: requests.Session | None = None) -> Destination:
    """The destination a partner's configuration names: its file drop under ``drop_root``, or
    its HTTPS endpoint (certificate files must exist; ``session`` may be shared)."""
    delivery = partner.delivery
    if isinstance(delivery, FileDropDelivery):
        return FileDrop(drop_root, partner.id)
    for path in (delivery.client_cert, delivery.client_key,
                 delivery.verify if isinstance(delivery.verify, Path) else None):
        if path is not None and not path.is_file():
            raise DestinationConfigError(f"partner {partner.id!r}: {path} is not a file")
    if delivery.verify is False:
        structlog.get_logger("disclosure.connectors").warning(
            "tls_verification_disabled", partner_id=partner.id)
    cert: tuple[Path, Path] | Path | None = delivery.client_cert
    if delivery.client_cert is not None and delivery.client_key is not None:
        cert = (delivery.client_cert, delivery.client_key)
    return HttpsDestination(delivery.url, client_cert=cert, verify=delivery.verify,
                            session=session)
