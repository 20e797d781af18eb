"""The fixed vocabularies of DESIGN.md section 4: the slugs the API, the table and reports share."""

from __future__ import annotations

from enum import StrEnum


class Category(StrEnum):
    """A category of personal data held by DUO (from DUO's own privacy statement)."""

    PERSONALIA = "personalia"
    OPLEIDINGSGEGEVENS = "opleidingsgegevens"
    FINANCIELE_GEGEVENS = "financiele_gegevens"
    IDENTIFICERENDE_NUMMERS = "identificerende_nummers"
    CONTACTHISTORIE = "contacthistorie"
    ACCOUNTGEGEVENS = "accountgegevens"
    TECHNISCHE_GEGEVENS = "technische_gegevens"
    NATIONALITEIT = "nationaliteit"
    GEZONDHEID = "gezondheid"
    STRAFRECHTELIJKE_GEGEVENS = "strafrechtelijke_gegevens"

    @property
    def special(self) -> bool:
        """Whether this is a special category: released only when listed, and always reviewed."""
        return self in SPECIAL_CATEGORIES


SPECIAL_CATEGORIES: frozenset[Category] = frozenset(
    {Category.NATIONALITEIT, Category.GEZONDHEID, Category.STRAFRECHTELIJKE_GEGEVENS}
)


class Body(StrEnum):
    """A kind of requesting organisation; every partner belongs to exactly one body."""

    BELASTINGDIENST = "belastingdienst"
    TOESLAGEN = "toeslagen"
    SVB = "svb"
    UWV = "uwv"
    GEMEENTE = "gemeente"
    OPENBAAR_MINISTERIE = "openbaar_ministerie"
    CBS = "cbs"
    INSPECTIE_ONDERWIJS = "inspectie_onderwijs"
    ONDERWIJSINSTELLING = "onderwijsinstelling"
    ONDERZOEKSINSTELLING = "onderzoeksinstelling"


class Purpose(StrEnum):
    """A statutory purpose a requester may claim (doelbinding, AVG art. 5(1)(b))."""

    BELASTINGHEFFING = "belastingheffing"
    TOESLAGEN = "toeslagen"
    KINDERBIJSLAG = "kinderbijslag"
    VERZEKERDENADMINISTRATIE = "verzekerdenadministratie"
    WERK_EN_INKOMEN = "werk_en_inkomen"
    BIJSTAND = "bijstand"
    LEERPLICHT = "leerplicht"
    STRAFRECHTELIJK_ONDERZOEK = "strafrechtelijk_onderzoek"
    STATISTIEK = "statistiek"
    ONDERWIJSTOEZICHT = "onderwijstoezicht"
    ONDERZOEK = "onderzoek"
    ONDERWIJSADMINISTRATIE = "onderwijsadministratie"


class AuthorisationKind(StrEnum):
    """A kind of authorisation a ground may require beside the request itself."""

    RC_MACHTIGING = "rc_machtiging"
    MINISTERIELE_AANWIJZING = "ministeriele_aanwijzing"


class SubjectIdType(StrEnum):
    """How a data subject is identified in a request."""

    BSN = "bsn"
    ONDERWIJSNUMMER = "onderwijsnummer"


class Outcome(StrEnum):
    """The outcome of a decision; ``needs_review`` only before a reviewer decided."""

    APPROVED = "approved"
    PARTIALLY_APPROVED = "partially_approved"
    REJECTED = "rejected"
    NEEDS_REVIEW = "needs_review"


class ReviewMode(StrEnum):
    """Whether a ground version sends every request to review or only on the policy's triggers."""

    NEVER = "never"
    ALWAYS = "always"


class ReasonCode(StrEnum):
    """Why a decision came out as it did (DESIGN.md section 6); each rests on a citation."""

    GROUND_APPLIES = "ground_applies"
    INVALID_REQUEST = "invalid_request"
    UNKNOWN_GROUND = "unknown_ground"
    GROUND_NOT_IN_FORCE = "ground_not_in_force"
    REQUESTER_NOT_ENTITLED = "requester_not_entitled"
    PURPOSE_NOT_COVERED = "purpose_not_covered"
    MISSING_CASE_REFERENCE = "missing_case_reference"
    MISSING_AUTHORISATION = "missing_authorisation"
    BULK_NOT_ALLOWED = "bulk_not_allowed"
    SPECIAL_CATEGORY_NOT_ALLOWED = "special_category_not_allowed"
    CATEGORY_NOT_COVERED = "category_not_covered"
    NOTHING_TO_RELEASE = "nothing_to_release"
    # A legal reviewer's decision (DESIGN.md section 1): withheld or rejected after review.
    WITHHELD_BY_REVIEWER = "withheld_by_reviewer"
    REJECTED_BY_REVIEWER = "rejected_by_reviewer"


class ReviewVerdict(StrEnum):
    """What a legal reviewer decides on the form."""

    APPROVE = "approve"
    APPROVE_PARTIALLY = "approve_partially"
    REJECT = "reject"


class ReviewTrigger(StrEnum):
    """Why a decision needs a human reviewer (DESIGN.md section 6, step 10)."""

    REVIEW_ALWAYS = "review_always"
    SPECIAL_CATEGORY = "special_category"
    ABOVE_AUTO_LIMIT = "above_auto_limit"
    # Known only once the register is consulted; added by the pipeline, never by assess().
    SHIELDED_SUBJECT = "shielded_subject"


def slugs(vocabulary: type[StrEnum]) -> list[str]:
    """The slugs of a vocabulary, in declaration order (for schemas and error messages)."""
    return [member.value for member in vocabulary]
