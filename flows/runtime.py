"""What a flow run works with: the ledger, the register, the table, partners, destinations.

Built once per process from the settings (environment ``DISCLOSURE_*``) and shared by the tasks
of every flow run in that process. Flow parameters never carry any of it: they carry ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import requests
from sqlalchemy import Engine

from connectors.destinations import Destination
from connectors.dropoff import DropBox
from connectors.partners import PartnerDirectory, destination_for, load_partners
from connectors.register import SqlRegister, make_register_engine
from connectors.register_seed import ensure_register
from flows.logs import configure_logging
from legal_bases.table import GroundTable
from records import db
from records.chain_keys import ChainKeys, parse_keyring
from records.pseudonym import Pseudonymizer
from records.settings import Settings, load_settings

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"


def chain_keys(settings: Settings) -> ChainKeys:
    """The chain's key ring: from the Prefect Secret block ``DISCLOSURE_CHAIN_KEY_BLOCK`` names,
    else as the settings say (``DISCLOSURE_CHAIN_KEY`` or the key file)."""
    if not settings.chain_key_block:
        return settings.chain_keys()
    from prefect.blocks.system import Secret  # noqa: PLC0415 - only where a block is configured

    value = Secret.load(settings.chain_key_block).get()  # type: ignore[union-attr]
    return parse_keyring(str(value), f"Prefect Secret block {settings.chain_key_block}")


def data_keks(settings: Settings) -> ChainKeys:
    """The KEK ring: from the Prefect Secret block ``DISCLOSURE_DATA_KEK_BLOCK`` names, else as
    the settings say (``DISCLOSURE_DATA_KEK`` or the key file)."""
    if not settings.data_kek_block:
        return settings.data_keks()
    from prefect.blocks.system import Secret  # noqa: PLC0415 - only where a block is configured

    value = Secret.load(settings.data_kek_block).get()  # type: ignore[union-attr]
    return parse_keyring(str(value), f"Prefect Secret block {settings.data_kek_block}")


def open_ledger(settings: Settings) -> Engine:
    """The ledger as the flows and commands open it: migrated, its chain key ring and its KEK
    ring bound."""
    return db.open_ledger(settings, chain_keys=chain_keys(settings),
                          data_keks=data_keks(settings))


def partners_file(settings: Settings) -> Path:
    """The partner configuration: the configured file, or the bundled examples' partners."""
    return settings.partners_file or EXAMPLES_DIR / "partners.yaml"


@dataclass
class Runtime:
    """The engine's resources in one process."""

    settings: Settings
    ledger: Engine
    register_engine: Engine
    table: GroundTable
    partners: PartnerDirectory
    pseudonymizer: Pseudonymizer
    _destinations: dict[str, Destination] = field(default_factory=dict)
    _http: requests.Session = field(default_factory=requests.Session)

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        register_engine = make_register_engine(settings.resolved_register_url)
        ensure_register(engine=register_engine, persons=settings.register_persons,
                        seed=settings.register_seed)
        return cls(settings=settings, ledger=open_ledger(settings),
                   register_engine=register_engine, table=settings.ground_table(),
                   partners=load_partners(partners_file(settings)),
                   pseudonymizer=Pseudonymizer.from_settings(settings))

    @property
    def register(self) -> SqlRegister:
        return SqlRegister(self.register_engine)

    @property
    def dropbox(self) -> DropBox:
        return DropBox(self.settings.resolved_dropoff_dir)

    def destination(self, partner_id: str) -> Destination:
        """Where a partner's deliveries go, as its configuration says (built once)."""
        if partner_id not in self._destinations:
            self._destinations[partner_id] = destination_for(
                self.partners.by_id(partner_id), drop_root=self.settings.resolved_outbox_dir,
                session=self._http)
        return self._destinations[partner_id]


@cache
def runtime() -> Runtime:
    """This process's runtime (configures logging once, on first use)."""
    configure_logging()
    return Runtime.from_settings(load_settings())


def reset_runtime() -> None:
    """Forget this process's runtime (tests that change the settings call this)."""
    runtime.cache_clear()
