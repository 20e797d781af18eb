"""The engine's one settings class (DESIGN.md section 8): environment variables ``DISCLOSURE_*``.

Nothing here is a module-level singleton: every entry point calls :func:`load_settings` (tests pass
overrides), so two ledgers in one process never share hidden state.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from legal_bases import limits
from legal_bases.table import GroundTable, load_table
from records.chain_keys import UNKEYED_UNTIL, ChainKeys, new_key_entry, parse_keyring
from records.errors import ChainKeyError, DataKeyError, PseudonymKeyError

#: Names of the key files created under ``data_dir`` when no key is configured.
PSEUDONYM_KEY_FILE = "pseudonym.key"
CHAIN_KEY_FILE = "chain.keys"
DATA_KEK_FILE = "data.keks"
#: Bytes of a generated pseudonym key, and the fewest a configured key may have.
PSEUDONYM_KEY_BYTES = 32


class Settings(BaseSettings):
    """Where the ledger lives, which key pseudonymises subjects, which table of grounds applies.

    * ``data_dir``: the local data folder (SQLite ledger, generated key file).
    * ``database_url``: SQLAlchemy URL of the ledger; default a SQLite file in ``data_dir``.
      ``postgresql://`` URLs are served by psycopg.
    * ``pseudonym_key``: hex of at least 32 bytes; default a key file in ``data_dir``, made with
      mode 0600 on first use. Losing the key makes old pseudonyms unfindable: back it up.
    * ``grounds_dir``: a folder of ground files; default the table the product ships.
    * ``register_url``: the source register; default the synthetic one, ``<data_dir>/register.db``,
      seeded on first start with ``register_persons`` people from ``register_seed``.
    * ``partners_file``: the partner configuration (YAML); default the bundled examples' partners.
    * ``dropoff_dir`` / ``outbox_dir``: where partners drop request files (one folder per
      partner) and where file-drop deliveries go (one folder per partner); default under
      ``data_dir``.
    * ``escalation_webhook_url``: where the escalation automation posts (JSON) when a review runs
      past its deadline; unset, the notification is a warning in the run's log.
    * ``prefect_port``: the port of the local Prefect server ``disclosure up`` starts when
      ``PREFECT_API_URL`` does not name another server.
    * ``chain_key``: the key ring that seals the audit chain (:mod:`records.chain_keys`); or
      ``chain_key_block``, the name of a Prefect Secret block holding it (read by the flows);
      default a key file in ``data_dir``, made on first use. Losing it makes the chain
      unverifiable: keep it (and every retired key) apart from the database, and back it up.
    * ``data_kek``: the ring of key-encryption keys that wrap each request's data key
      (:mod:`records.data_keys`), in the chain key ring's format; or ``data_kek_block``, a
      Prefect Secret block holding it (read by the flows); default a key file in ``data_dir``,
      made on first use. Losing it makes every sealed submission and motivation unreadable:
      keep it apart from the database and its backups, and back it up on its own.
    * ``outbox_keep_days``: how long a file-drop delivery stays in a partner's outbox folder
      when the partner does not mark it collected (:mod:`connectors.outbox`);
      ``dropoff_keep_days``: how long a drop-off file stays in processed/ or rejected/ once
      filed away (:meth:`connectors.dropoff.DropBox.sweep_filed`).
    * ``checkpoint_dir``: where signed checkpoints of the chain head are written (outside the
      ledger; ``audit verify`` checks every one it finds there); default under ``data_dir``.
    * ``claim_lease_seconds``: how long a worker's claim on a request holds unless renewed (a
      crashed worker's requests are taken over after at most this long).
    """

    model_config = SettingsConfigDict(env_prefix="DISCLOSURE_", extra="forbid")

    data_dir: Path = Path("var")
    database_url: str | None = None
    pseudonym_key: SecretStr | None = None
    grounds_dir: Path | None = None
    register_url: str | None = None
    register_persons: int = 2000
    register_seed: int = 2026
    partners_file: Path | None = None
    dropoff_dir: Path | None = None
    outbox_dir: Path | None = None
    prefect_port: int = 4200
    escalation_webhook_url: str | None = None
    chain_key: SecretStr | None = None
    chain_key_block: str | None = None
    data_kek: SecretStr | None = None
    data_kek_block: str | None = None
    outbox_keep_days: int = limits.OUTBOX_KEEP_DAYS
    dropoff_keep_days: int = limits.DROPOFF_KEEP_DAYS
    checkpoint_dir: Path | None = None
    claim_lease_seconds: float = limits.CLAIM_LEASE_SECONDS

    @property
    def resolved_database_url(self) -> str:
        """The configured database URL, or the SQLite file ``<data_dir>/ledger.db``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'ledger.db'}"

    @property
    def resolved_register_url(self) -> str:
        """The configured register URL, or the SQLite file ``<data_dir>/register.db``."""
        return self.register_url or f"sqlite:///{self.data_dir / 'register.db'}"

    @property
    def resolved_dropoff_dir(self) -> Path:
        return self.dropoff_dir or self.data_dir / "dropoff"

    @property
    def resolved_outbox_dir(self) -> Path:
        return self.outbox_dir or self.data_dir / "outbox"

    @property
    def resolved_checkpoint_dir(self) -> Path:
        return self.checkpoint_dir or self.data_dir / "checkpoints"

    @property
    def pseudonym_key_file(self) -> Path:
        return self.data_dir / PSEUDONYM_KEY_FILE

    @property
    def chain_key_file(self) -> Path:
        return self.data_dir / CHAIN_KEY_FILE

    @property
    def data_kek_file(self) -> Path:
        return self.data_dir / DATA_KEK_FILE

    def data_keks(self) -> ChainKeys:
        """The KEK ring: ``DISCLOSURE_DATA_KEK``, else the key file (made on first use); a ring
        in a Prefect Secret block (``DISCLOSURE_DATA_KEK_BLOCK``) is read by the flows."""
        if self.data_kek_block:
            raise DataKeyError("the KEK ring is in the Prefect Secret block "
                               f"{self.data_kek_block!r}: open the ledger through "
                               "flows.runtime.open_ledger, which reads it")
        if self.data_kek is not None:
            return parse_keyring(self.data_kek.get_secret_value(), "DISCLOSURE_DATA_KEK")
        path = self.data_kek_file
        return parse_keyring(_key_file(path, new_key_entry), str(path))

    def pseudonym_key_bytes(self) -> bytes:
        """The pseudonym key: the configured one, else the key file (created on first use)."""
        if self.pseudonym_key is not None:
            return _parse_key(self.pseudonym_key.get_secret_value(), "DISCLOSURE_PSEUDONYM_KEY")
        path = self.pseudonym_key_file
        return _parse_key(_key_file(path, lambda: secrets.token_hex(PSEUDONYM_KEY_BYTES)),
                          str(path))

    @property
    def makes_chain_key_file(self) -> bool:
        """Whether the chain's key ring is the key file and it does not exist yet."""
        return (self.chain_key is None and not self.chain_key_block
                and not self.chain_key_file.exists())

    def note_unkeyed_until(self, seq: int) -> ChainKeys:
        """Say in the key file that events up to ``seq`` were written before the chain was
        keyed (the first line; see :mod:`records.chain_keys`); returns the ring."""
        path = self.chain_key_file
        text = path.read_text("ascii")
        path.write_text(f"{UNKEYED_UNTIL}:{seq}\n{text}", "ascii")
        return parse_keyring(path.read_text("ascii"), str(path))

    def chain_keys(self) -> ChainKeys:
        """The chain's key ring: ``DISCLOSURE_CHAIN_KEY``, else the key file (made on first use).

        A ring in a Prefect Secret block (``DISCLOSURE_CHAIN_KEY_BLOCK``) is read by the flows,
        which pass it on; here it is an error to rely on one.
        """
        if self.chain_key_block:
            raise ChainKeyError("the chain key ring is in the Prefect Secret block "
                                f"{self.chain_key_block!r}: open the ledger through "
                                "flows.runtime.open_ledger, which reads it")
        if self.chain_key is not None:
            return parse_keyring(self.chain_key.get_secret_value(), "DISCLOSURE_CHAIN_KEY")
        path = self.chain_key_file
        return parse_keyring(_key_file(path, new_key_entry), str(path))

    def ground_table(self) -> GroundTable:
        """The table of grounds from ``grounds_dir``, or the shipped one."""
        return load_table(self.grounds_dir)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with ``overrides`` (field names) taking precedence."""
    return Settings(**overrides)  # type: ignore[arg-type]


def _parse_key(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise PseudonymKeyError(f"{where}: the pseudonym key must be hexadecimal") from None
    if len(key) < PSEUDONYM_KEY_BYTES:
        raise PseudonymKeyError(f"{where}: the pseudonym key must be at least "
                                f"{PSEUDONYM_KEY_BYTES} bytes "
                                f"({2 * PSEUDONYM_KEY_BYTES} hex digits)")
    return key


def _key_file(path: Path, make: Callable[[], str]) -> str:
    """Read the key file, or create it atomically (mode 0600) holding ``make()``.

    The key is written to a private temporary file first and then linked into place, which fails
    if another process won the race; then that process's key is read. A half-written key file
    can therefore never be read.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.write(make() + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    return path.read_text("ascii")
