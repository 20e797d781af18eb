"""``disclosure partners list|add|rotate-key|revoke``: the partner organisations and their keys.

* ``list`` shows the configured partners with their keys (ids only).
* ``add ID --name N --body B --oin O [--https-url U]`` appends the partner to the partner file
  (``DISCLOSURE_PARTNERS_FILE``; checked as a whole first) and issues its first key.
  ``rotate-key ID`` issues another key (the old ones keep working until revoked);
  ``revoke ID (--key-id K ... | --all)`` revokes, effective for the next request. A key is
  printed once and stored only as its hash; issuing and revoking are audit events.
"""

from __future__ import annotations

import argparse
import getpass
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session

from cli.api_server import ApiCommandError
from cli.arguments import print_table, say
from connectors.partner_file import append_partner, partner_entry
from connectors.partners import load_partners
from flows.runtime import open_ledger, partners_file
from legal_bases.vocabulary import Body, slugs
from records.api_keys import IssuedKey, active_key_counts, issue_key, keys_of, revoke_keys
from records.settings import Settings, load_settings


def _actor(given: str | None) -> str:
    """Who an operator command is recorded as: ``--actor``, else ``operator:<login name>``."""
    if given:
        return given
    try:
        return f"operator:{getpass.getuser()}"
    except (KeyError, OSError):
        return "operator"


def _print_key(issued: IssuedKey) -> None:
    say(f"API key for {issued.partner_id} (key id {issued.key_id}); shown once, store it now:")
    say(f"  {issued.key}")


def _issue(settings: Settings, partner_id: str, actor: str) -> IssuedKey:
    engine = open_ledger(settings)
    try:
        with Session(engine) as session, session.begin():
            return issue_key(session=session, partner_id=partner_id,
                             issued_at=datetime.now(UTC), issued_by=actor)
    finally:
        engine.dispose()


def _configured(settings: Settings, partner_id: str) -> None:
    directory = load_partners(partners_file(settings))
    if partner_id not in directory:
        raise ApiCommandError(f"no partner {partner_id!r} in {directory.source}; add it with "
                              "`disclosure partners add`")


def cmd_partners_add(args: argparse.Namespace) -> int:
    settings = load_settings()
    if settings.partners_file is None:
        raise ApiCommandError("set DISCLOSURE_PARTNERS_FILE to the partner file to add to "
                              "(the bundled examples are not edited)")
    entry = partner_entry(partner_id=args.id, name=args.name, body=args.body, oin=args.oin,
                          https_url=args.https_url)
    partner = append_partner(settings.partners_file, entry)
    say(f"Added {partner.id} ({partner.name}, {partner.body.value}, OIN {partner.oin}) to "
         f"{settings.partners_file}")
    _print_key(_issue(settings, partner.id, _actor(args.actor)))
    return 0


def cmd_partners_rotate_key(args: argparse.Namespace) -> int:
    settings = load_settings()
    _configured(settings, args.id)
    _print_key(_issue(settings, args.id, _actor(args.actor)))
    say("The partner's other keys keep working until revoked "
         f"(disclosure partners revoke {args.id} --key-id <old key id>).")
    return 0


def cmd_partners_revoke(args: argparse.Namespace) -> int:
    if not args.all and not args.key_id:
        raise ApiCommandError("name the keys to revoke with --key-id, or revoke --all")
    settings = load_settings()
    engine = open_ledger(settings)
    try:
        with Session(engine) as session, session.begin():
            revoked = revoke_keys(session=session, partner_id=args.id,
                                  key_ids=None if args.all else args.key_id,
                                  revoked_at=datetime.now(UTC), revoked_by=_actor(args.actor),
                                  reason=args.reason)
    finally:
        engine.dispose()
    if not revoked:
        say(f"{args.id} has no unrevoked keys; nothing revoked")
        return 0
    say(f"Revoked {len(revoked)} key(s) of {args.id}: {', '.join(revoked)} (effective now)")
    return 0


def cmd_partners_list(args: argparse.Namespace) -> int:
    settings = load_settings()
    directory = load_partners(partners_file(settings))
    engine = open_ledger(settings)
    try:
        with Session(engine) as session:
            keys = keys_of(session=session)
            counts = active_key_counts(session=session)
    finally:
        engine.dispose()
    rows = [("partner", "body", "OIN", "keys", "key ids (unrevoked)")]
    for partner in directory:
        active = [k.key_id for k in keys if k.partner_id == partner.id and k.active]
        rows.append((partner.id, partner.body.value, partner.oin,
                     str(counts.get(partner.id, 0)), ", ".join(active) or "—"))
    print_table(rows)
    if args.all_keys:
        say("")
        for key in keys:
            revoked = (f"revoked {key.revoked_at.isoformat()} by {key.revoked_by}"
                       if key.revoked_at else "active")
            say(f"{key.key_id}  {key.partner_id}  issued {key.issued_at.isoformat()} by "
                 f"{key.issued_by}  {revoked}")
    unknown = sorted({k.partner_id for k in keys if k.active} - set(directory.ids))
    if unknown:
        say(f"\nunrevoked keys of partners no longer configured (they do not work): "
             f"{', '.join(unknown)}")
    say(f"\n{len(directory)} partner(s) from {directory.source}")
    return 0


def register(sub: Any) -> None:
    """Add ``partners add|rotate-key|revoke|list`` to the command line."""
    partners = sub.add_parser("partners", help="partner organisations and their API keys")
    psub = partners.add_subparsers(dest="partners_command", required=True, metavar="ACTION")
    actor = argparse.ArgumentParser(add_help=False)
    actor.add_argument("--actor", default=None,
                       help="who does this, for the audit trail (default operator:<login>)")
    plist = psub.add_parser("list", help="the configured partners and their keys (ids only)")
    plist.add_argument("--all-keys", action="store_true",
                       help="also list every key ever issued, revoked ones too")
    plist.set_defaults(handler=cmd_partners_list)
    add = psub.add_parser("add", parents=[actor],
                          help="add a partner to the partner file and issue its first key")
    add.add_argument("id", help="the partner's id (a slug, e.g. gemeente-utrecht)")
    add.add_argument("--name", required=True, help="display name")
    add.add_argument("--body", required=True, choices=slugs(Body), help="its requesting body")
    add.add_argument("--oin", required=True, help="its OIN (20 characters)")
    add.add_argument("--https-url", default=None,
                     help="deliver by HTTPS POST to this URL (default: a file drop)")
    add.set_defaults(handler=cmd_partners_add)
    rotate = psub.add_parser("rotate-key", parents=[actor],
                             help="issue another key (old ones work until revoked)")
    rotate.add_argument("id")
    rotate.set_defaults(handler=cmd_partners_rotate_key)
    revoke = psub.add_parser("revoke", parents=[actor], help="revoke keys, effective at once")
    revoke.add_argument("id")
    which = revoke.add_mutually_exclusive_group()
    which.add_argument("--key-id", action="append", default=None, metavar="KEY_ID",
                       help="the key to revoke (repeatable)")
    which.add_argument("--all", action="store_true", help="every unrevoked key of the partner")
    revoke.add_argument("--reason", default=None, help="why (kept with the revocation)")
    revoke.set_defaults(handler=cmd_partners_revoke)
