"""A deterministic generator of synthetic DUO register persons.

Every value is made up: names, addresses and institutions come from small built-in lists, the
BSNs pass the elfproef, the onderwijsnummers their own check, the IBANs mod 97; IP addresses are
from the documentation ranges (RFC 5737, RFC 3849). The same ``seed`` (and the same ``include``)
always gives the same persons, byte for byte: nothing reads the clock, the synthetic register's
"today" is :data:`REGISTER_TODAY`.

A person's number appears only in ``identificerende_nummers`` (and the row's key), never in another
category, so a pseudonymised delivery of other categories cannot carry it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from connectors.errors import RegisterError
from legal_bases.identifiers import (
    is_valid_bsn,
    is_valid_onderwijsnummer,
    random_bsn,
    random_onderwijsnummer,
)
from legal_bases.request import Subject
from legal_bases.vocabulary import SubjectIdType

#: The synthetic register's "today": dates are made relative to it, never to the real calendar.
REGISTER_TODAY = date(2026, 1, 1)
#: Persons generated and inserted per batch while seeding.
SEED_BATCH_SIZE = 5_000
#: Shares of the population (chances per person).
SHARE_ONDERWIJSNUMMER = 0.08
SHARE_SHIELDED = 0.03
SHARE_NATIONALITEIT = 0.05
SHARE_GEZONDHEID = 0.04
SHARE_STRAFRECHTELIJK = 0.025  # of those aged 16 or more

_T = TypeVar("_T")

_SURNAMES = (
    ("", "Jansen"), ("de", "Vries"), ("van den", "Berg"), ("van", "Dijk"), ("", "Bakker"),
    ("", "Janssen"), ("", "Visser"), ("", "Smit"), ("", "Meijer"), ("de", "Boer"),
    ("", "Mulder"), ("de", "Groot"), ("", "Bos"), ("", "Vos"), ("", "Peters"),
    ("", "Hendriks"), ("van", "Leeuwen"), ("", "Dekker"), ("", "Brouwer"), ("de", "Wit"),
    ("", "Dijkstra"), ("", "Smits"), ("de", "Graaf"), ("van der", "Meer"), ("van der", "Linden"),
    ("", "Kok"), ("", "Jacobs"), ("de", "Haan"), ("", "Vermeulen"), ("van den", "Heuvel"),
    ("van der", "Veen"), ("van den", "Broek"), ("de", "Bruijn"), ("de", "Jong"), ("", "Schouten"),
    ("van", "Beek"), ("", "Willems"), ("van", "Vliet"), ("van de", "Ven"), ("", "Hoekstra"),
    ("", "Maas"), ("", "Verhoeven"), ("", "Koster"), ("van", "Dam"), ("van der", "Wal"),
    ("", "Prins"), ("", "Blom"), ("", "Huisman"), ("", "Yilmaz"), ("", "El Amrani"),
    ("", "Kaya"), ("", "Bouzid"), ("", "Nguyen"), ("", "Pinas"), ("", "Kartosen"),
)
_GIVEN_NAMES = {
    "M": ("Daan", "Sem", "Lucas", "Levi", "Finn", "Milan", "Jesse", "Noah", "Bram", "Thomas",
          "Luuk", "Ruben", "Jan", "Pieter", "Kees", "Henk", "Mohamed", "Youssef", "Emre", "Stijn",
          "Tim", "Lars", "Mees", "Gijs", "Wouter", "Bas", "Hamza", "Julian", "Sven", "Tijn"),
    "V": ("Emma", "Julia", "Mila", "Tess", "Sophie", "Zoë", "Sara", "Nora", "Fenna", "Eva",
          "Lotte", "Anna", "Noor", "Lisa", "Fleur", "Sanne", "Anouk", "Fatima", "Yasmine", "Elif",
          "Maria", "Ingrid", "Marieke", "Iris", "Roos", "Femke", "Esmee", "Amira", "Lieke",
          "Sofie"),
}
_STREETS = (
    "Dorpsstraat", "Kerkstraat", "Schoolstraat", "Molenweg", "Stationsweg", "Julianastraat",
    "Beatrixlaan", "Wilhelminastraat", "Nieuwstraat", "Kastanjelaan", "Eikenlaan", "Lindelaan",
    "Prinses Irenestraat", "Oranjestraat", "Marktplein", "Havenstraat", "Sportlaan", "Parklaan",
    "Vondelstraat", "Rembrandtlaan", "Vermeerstraat", "Burgemeester de Withstraat", "Singel",
    "Zuiderweg", "Noorderhaven", "Tulpstraat", "Rozenstraat", "Beukenlaan", "Dahliastraat",
    "Industrieweg", "Graaf Florisstraat", "Van Goghstraat", "Mozartlaan", "Bachstraat",
)
#: Places of residence with a postcode range (the four digits) that lies in or near them.
_PLACES = (
    ("Amsterdam", 1011, 1109), ("Rotterdam", 3011, 3089), ("Den Haag", 2491, 2597),
    ("Utrecht", 3511, 3585), ("Eindhoven", 5611, 5658), ("Groningen", 9711, 9747),
    ("Tilburg", 5011, 5049), ("Almere", 1311, 1363), ("Breda", 4811, 4839),
    ("Nijmegen", 6511, 6546), ("Apeldoorn", 7311, 7339), ("Haarlem", 2011, 2037),
    ("Arnhem", 6811, 6846), ("Enschede", 7511, 7548), ("Amersfoort", 3811, 3829),
    ("Zwolle", 8011, 8043), ("Leiden", 2311, 2334), ("Maastricht", 6211, 6229),
    ("Leeuwarden", 8911, 8939), ("Delft", 2611, 2629), ("Dordrecht", 3311, 3329),
    ("Zaandam", 1501, 1509), ("Emmen", 7811, 7833), ("Deventer", 7411, 7429),
    ("Middelburg", 4331, 4339), ("Assen", 9401, 9409), ("Lelystad", 8211, 8245),
)
_POSTCODE_LETTERS = "ABCEGHJKLMNPRTVWXZ"
_BANKS = ("ABNA", "INGB", "RABO", "SNSB", "TRIO", "ASNB", "KNAB", "BUNQ", "RBRB")
_MAIL_DOMAINS = ("example.nl", "example.com", "voorbeeld.nl")

# Fictional institutions (names and BRIN codes are made up), by education sector.
_INSTITUTIONS = {
    "po": (("Basisschool De Regenboog", "07QA"), ("Openbare Basisschool Het Kompas", "12XB"),
           ("Christelijke Basisschool De Wegwijzer", "19RK"), ("Montessorischool Zuid", "23AC"),
           ("Basisschool De Vlieger", "28ZT")),
    "vo": (("Stedelijk Lyceum Oosterkwartier", "01VX"), ("Christelijk College Groenewoud", "14KR"),
           ("Scholengemeenschap De Dijk", "17PL"), ("Het Nieuwe Gymnasium", "20GH"),
           ("Vakcollege Rivierenland", "25MW")),
    "mbo": (("ROC Midden-Delta", "30MD"), ("Technisch College Noord", "31TN"),
            ("Zorgcollege Randstad", "32ZR"), ("Groen College Oost", "33GO")),
    "hbo": (("Hogeschool Zuiderzee", "40HZ"), ("Hogeschool van de Kust", "41HK"),
            ("Kunstacademie Lage Landen", "42KL")),
    "wo": (("Universiteit van de Lage Landen", "50UL"), ("Technische Universiteit Polder", "51TP"),
           ("Rijksuniversiteit Noordkust", "52RN")),
}
_PROGRAMMES = {
    "po": ("Basisonderwijs",),
    "vo": ("vmbo basisberoepsgerichte leerweg", "vmbo gemengde leerweg",
           "vmbo theoretische leerweg", "havo", "vwo (atheneum)", "vwo (gymnasium)"),
    "mbo": ("Verzorgende-IG (niveau 3)", "Software Developer (niveau 4)",
            "Eerste Monteur Elektrotechniek (niveau 3)", "Pedagogisch Medewerker (niveau 4)",
            "Logistiek Medewerker (niveau 2)", "Juridisch Medewerker (niveau 4)"),
    "hbo": ("Bachelor Verpleegkunde", "Bachelor HBO-ICT", "Bachelor Bedrijfskunde",
            "Bachelor Leraar Basisonderwijs (pabo)", "Bachelor Social Work"),
    "wo": ("Bachelor Rechtsgeleerdheid", "Bachelor Psychologie", "Master Geneeskunde",
           "Bachelor Technische Natuurkunde", "Master Economie", "Bachelor Geschiedenis"),
}
_CONTACT_CHANNELS = ("telefoon", "e-mail", "brief", "chat", "balie")
_CONTACT_SUBJECTS = (
    "Vraag over aflossing studieschuld", "Wijziging adres doorgegeven",
    "Vraag over aanvullende beurs", "Studentenreisproduct stopzetten",
    "Betalingsregeling aangevraagd", "Vraag over draagkrachtmeting",
    "Bezwaar tegen besluit ingediend", "Inloggen Mijn DUO lukt niet",
    "Vraag over diploma-uittreksel", "Uitwonendenbeurs: controle woonsituatie",
    "Tegemoetkoming scholieren aangevraagd", "Wijziging bankrekeningnummer",
)
_NATIONALITIES = ("Nederlandse", "Turkse", "Marokkaanse", "Surinaamse", "Duitse", "Poolse",
                  "Belgische", "Syrische", "Indonesische", "Spaanse", "Oekraïense", "Eritrese")
_HEALTH = (
    ("functiebeperking", "Dyslexie; recht op extra tentamentijd"),
    ("chronische_ziekte", "Chronische ziekte; verlenging prestatiebeurs toegekend"),
    ("psychische_aandoening", "Psychische aandoening; studievertraging erkend"),
    ("zintuiglijke_beperking", "Visuele beperking; aangepast lesmateriaal"),
    ("langdurig_ziekteverzuim", "Langdurig ziekteverzuim gemeld door de school"),
)
_CRIMINAL = (
    ("aangifte", "Valsheid in geschrift (opgave woonsituatie studiefinanciering)"),
    ("strafbeschikking", "Oplichting (uitwonendenbeurs)"),
    ("veroordeling", "Fraude met studiefinanciering"),
    ("proces_verbaal", "Verzuim leerplicht (Leerplichtwet art. 2)"),
)
_GRANT_KINDS = (("basisbeurs", 9_000, 32_500), ("aanvullende_beurs", 5_000, 45_000),
                ("lening", 10_000, 110_000), ("collegegeldkrediet", 15_000, 22_000),
                ("tegemoetkoming_scholieren", 3_000, 16_000))


# -- identifiers --------------------------------------------------------------------------------

def iban(bank: str, account: int) -> str:
    """A Dutch IBAN for a 4-letter bank code and a 10-digit account number (mod-97 check digits)."""
    bban = f"{bank}{account:010d}"
    digits = "".join(str(int(c, 36)) for c in f"{bban}NL00")
    return f"NL{98 - int(digits) % 97:02d}{bban}"


def is_valid_iban(text: str) -> bool:
    """Whether ``text`` is an IBAN whose check digits are right (ISO 13616, mod 97 == 1)."""
    rearranged = text[4:] + text[:4]
    try:
        return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1
    except ValueError:
        return False


# -- one person ---------------------------------------------------------------------------------

class _Generator:
    """Makes persons one after another from one seeded random stream."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - synthetic data, reproducible by design
        self.used: set[tuple[str, str]] = set()

    def identifier(self) -> tuple[str, str]:
        rng = self.rng
        while True:
            if rng.random() < SHARE_ONDERWIJSNUMMER:
                key = (SubjectIdType.ONDERWIJSNUMMER.value, random_onderwijsnummer(rng))
            else:
                key = (SubjectIdType.BSN.value, random_bsn(rng))
            if key not in self.used:
                self.used.add(key)
                return key

    # Faster than Random.choice/randrange (one C call each) and just as reproducible.
    def pick(self, items: Sequence[_T]) -> _T:
        return items[int(self.rng.random() * len(items))]

    def below(self, n: int) -> int:
        return int(self.rng.random() * n)

    def between(self, low: int, high: int) -> int:
        return low + int(self.rng.random() * (high - low))

    def day(self, start: date, end: date) -> date:
        span = (end - start).days
        return start + timedelta(days=self.below(max(span, 1)))

    def person(self, person_id: int, id_type: str, number: str) -> dict[str, Any]:
        rng = self.rng
        birth = self.day(REGISTER_TODAY - timedelta(days=66 * 365), REGISTER_TODAY
                         - timedelta(days=5 * 365))
        sex = "M" if rng.random() < 0.5 else "V"
        prefix, surname = self.pick(_SURNAMES)
        names = _GIVEN_NAMES[sex]
        given = list(dict.fromkeys(self.pick(names) for _ in range(self.pick((1, 1, 2, 3)))))
        age = (REGISTER_TODAY - birth).days // 365
        education = self.education(birth)
        has_account = age >= 15 and rng.random() < 0.9
        row: dict[str, Any] = {
            "person_id": person_id,
            "id_type": id_type,
            "number": number,
            "shielded": rng.random() < SHARE_SHIELDED,
            "personalia": self.personalia(birth=birth, sex=sex, given=given, prefix=prefix,
                                          surname=surname, age=age),
            "opleidingsgegevens": education,
            "financiele_gegevens": self.finance(education, age, number),
            "identificerende_nummers": {id_type: number},
            "contacthistorie": self.contacts(age),
            "accountgegevens": self.account(given[0], surname, birth) if has_account else None,
            "technische_gegevens": self.technical() if has_account else None,
            "nationaliteit": None,
            "gezondheid": None,
            "strafrechtelijke_gegevens": None,
        }
        if rng.random() < SHARE_NATIONALITEIT:
            row["nationaliteit"] = self.nationality()
        if rng.random() < SHARE_GEZONDHEID:
            row["gezondheid"] = self.health(birth)
        if age >= 16 and rng.random() < SHARE_STRAFRECHTELIJK:
            row["strafrechtelijke_gegevens"] = self.criminal(birth)
        return row

    def personalia(self, *, birth: date, sex: str, given: list[str], prefix: str, surname: str,
                   age: int) -> dict[str, Any]:
        rng = self.rng
        place, low, high = self.pick(_PLACES)
        letters = self.pick(_POSTCODE_LETTERS) + self.pick(_POSTCODE_LETTERS)
        house = self.between(1, 240)
        addition = self.pick(("", "", "", "", "A", "B", "-1", "-2", " bis"))
        full_surname = f"{prefix} {surname}".strip()
        mail_name = f"{given[0]}.{full_surname}".lower().replace(" ", "").replace("ë", "e")
        data: dict[str, Any] = {
            "given_names": " ".join(given),
            "surname_prefix": prefix or None,
            "surname": surname,
            "sex": sex,
            "date_of_birth": birth.isoformat(),
            "address": {
                "street": self.pick(_STREETS),
                "house_number": f"{house}{addition}",
                "postcode": f"{self.between(low, high + 1)} {letters}",
                "place_of_residence": place,
                "country": "Nederland",
            },
            "phone": f"06-{self.between(10**7, 10**8)}" if age >= 12 else None,
            "email": f"{mail_name}{self.below(100)}@{self.pick(_MAIL_DOMAINS)}"
                     if age >= 12 else None,
            "partner": None,
            "children": [],
        }
        if age >= 22 and rng.random() < 0.45:
            other = "V" if sex == "M" else "M"
            p_prefix, p_surname = self.pick(_SURNAMES)
            data["partner"] = {"given_names": self.pick(_GIVEN_NAMES[other]),
                               "surname": f"{p_prefix} {p_surname}".strip()}
        if age >= 25 and rng.random() < 0.4:
            latest = min(REGISTER_TODAY, birth + timedelta(days=45 * 365))
            for _ in range(self.pick((1, 1, 2, 2, 3))):
                child_sex = "M" if rng.random() < 0.5 else "V"
                data["children"].append({
                    "given_names": self.pick(_GIVEN_NAMES[child_sex]),
                    "surname": full_surname,
                    "date_of_birth": self.day(birth + timedelta(days=20 * 365), latest).isoformat(),
                })
        return data

    def education(self, birth: date) -> dict[str, Any]:
        rng = self.rng
        enrolments: list[dict[str, Any]] = []
        diplomas: list[dict[str, Any]] = []

        def enrol(sector: str, start: date, years: int, programme: str | None = None,
                  graduate: bool = False) -> bool:
            if start >= REGISTER_TODAY:
                return False
            name, brin = self.pick(_INSTITUTIONS[sector])
            programme = programme or self.pick(_PROGRAMMES[sector])
            end = date(start.year + years, 7, 31)
            finished = end < REGISTER_TODAY
            enrolments.append({"sector": sector, "institution": name, "brin": brin,
                               "programme": programme, "start_date": start.isoformat(),
                               "end_date": end.isoformat() if finished else None})
            if finished and graduate:
                diplomas.append({"sector": sector, "institution": name, "brin": brin,
                                 "programme": programme,
                                 "issued_on": date(end.year, 7, self.between(1, 29)).isoformat()})
            return finished

        enrol("po", date(birth.year + 4, 8, 15), 8)
        vo = self.pick(_PROGRAMMES["vo"])
        vo_years = 4 if vo.startswith("vmbo") else (5 if vo == "havo" else 6)
        finished = enrol("vo", date(birth.year + 12, 8, 15), vo_years, vo,
                         graduate=rng.random() < 0.9)
        if finished and diplomas and rng.random() < 0.85:
            follow = "mbo" if vo.startswith("vmbo") else ("hbo" if vo == "havo" else "wo")
            if follow == "wo" and rng.random() < 0.3:
                follow = "hbo"
            enrol(follow, date(birth.year + 12 + vo_years, 9, 1), self.pick((3, 4, 4, 5)),
                  graduate=rng.random() < 0.75)
        return {"enrolments": enrolments, "diplomas": diplomas}

    def finance(self, education: dict[str, Any], age: int, number: str) -> dict[str, Any] | None:
        rng = self.rng
        grants: list[dict[str, Any]] = []
        for enrolment in education["enrolments"]:
            if enrolment["sector"] not in {"mbo", "hbo", "wo"}:
                continue
            first = int(enrolment["start_date"][:4])
            last = int(enrolment["end_date"][:4]) if enrolment["end_date"] else REGISTER_TODAY.year
            for year in range(first, min(last, first + 4) + 1):
                kind, low, high = self.pick(_GRANT_KINDS[:4])
                monthly = self.between(low, high)
                grants.append({"scheme": "studiefinanciering", "kind": kind, "year": year,
                               "monthly_amount_eur": f"{monthly // 100}.{monthly % 100:02d}"})
        if 16 <= age <= 18 and rng.random() < 0.3:
            kind, low, high = _GRANT_KINDS[4]
            monthly = self.between(low, high)
            grants.append({"scheme": "wtos", "kind": kind, "year": REGISTER_TODAY.year - 1,
                           "monthly_amount_eur": f"{monthly // 100}.{monthly % 100:02d}"})
        if not grants and age < 18:
            return None
        account = iban(self.pick(_BANKS), self.between(10**9, 10**10))
        while number in account:  # a number must never appear outside identificerende_nummers
            account = iban(self.pick(_BANKS), self.between(10**9, 10**10))
        income = self.between(0, 7_500_000) if age >= 18 else self.between(0, 800_000)
        return {
            "grants": grants,
            "income": {"year": REGISTER_TODAY.year - 2,
                       "amount_eur": f"{income // 100}.{income % 100:02d}",
                       "source": "Belastingdienst"},
            "iban": account,
        }

    def contacts(self, age: int) -> dict[str, Any] | None:
        count = self.pick((0, 0, 1, 1, 2, 3, 5)) if age >= 16 else 0
        if count == 0:
            return None
        contacts = [{"date": self.day(REGISTER_TODAY - timedelta(days=6 * 365),
                                      REGISTER_TODAY).isoformat(),
                     "channel": self.pick(_CONTACT_CHANNELS),
                     "subject": self.pick(_CONTACT_SUBJECTS)} for _ in range(count)]
        contacts.sort(key=lambda c: c["date"])
        return {"contacts": contacts}

    def account(self, given: str, surname: str, birth: date) -> dict[str, Any]:
        rng = self.rng
        created = self.day(max(birth + timedelta(days=15 * 365), date(2012, 1, 1)), REGISTER_TODAY)
        login = datetime.combine(self.day(created, REGISTER_TODAY), datetime.min.time(), UTC)
        login += timedelta(seconds=self.below(86_400))
        handle = f"{given[0]}{surname.replace(' ', '')}".lower().replace("ë", "e")
        return {"username": f"{handle}{self.between(10, 9999)}",
                "created_on": created.isoformat(),
                "last_login": login.isoformat().replace("+00:00", "Z"),
                "two_factor": rng.random() < 0.7}

    def technical(self) -> dict[str, Any]:
        rng = self.rng
        addresses = []
        for _ in range(self.pick((1, 1, 2, 3))):
            if rng.random() < 0.8:
                net = self.pick(("192.0.2", "198.51.100", "203.0.113"))
                address = f"{net}.{self.between(1, 255)}"
            else:
                address = f"2001:db8:{self.below(0x10000):x}::{self.between(1, 0x10000):x}"
            seen = datetime.combine(self.day(REGISTER_TODAY - timedelta(days=730), REGISTER_TODAY),
                                    datetime.min.time(), UTC)
            addresses.append({"address": address,
                              "last_seen": seen.isoformat().replace("+00:00", "Z")})
        return {"ip_addresses": addresses}

    def nationality(self) -> dict[str, Any]:
        rng = self.rng
        if rng.random() < 0.6:
            return {"nationalities": ["Nederlandse", self.pick(_NATIONALITIES[1:])]}
        return {"nationalities": [self.pick(_NATIONALITIES[1:])]}

    def health(self, birth: date) -> dict[str, Any]:
        kind, description = self.pick(_HEALTH)
        recorded = self.day(birth + timedelta(days=6 * 365), REGISTER_TODAY)
        return {"conditions": [{"kind": kind, "description": description,
                                "recorded_on": recorded.isoformat()}]}

    def criminal(self, birth: date) -> dict[str, Any]:
        kind, offence = self.pick(_CRIMINAL)
        on = self.day(birth + timedelta(days=16 * 365), REGISTER_TODAY)
        return {"records": [{"kind": kind, "offence": offence, "date": on.isoformat(),
                             "case_reference": f"PV-{on.year}-{self.below(100_000):05d}"}]}


def generate_persons(*, persons: int, seed: int,
                     include: Sequence[Subject] = ()) -> Iterator[dict[str, Any]]:
    """The rows of ``persons`` synthetic people, the same for the same ``seed`` and ``include``.

    ``include`` names subjects that must be in the register (the bundled example requests' BSNs,
    say); they become the first persons, with generated data. Each must be a valid identifier.
    """
    if persons < len(include):
        raise RegisterError(f"cannot include {len(include)} subject(s) in {persons} person(s)")
    generator = _Generator(seed)
    for index, subject in enumerate(include):
        valid = (is_valid_bsn(subject.number) if subject.id_type is SubjectIdType.BSN
                 else is_valid_onderwijsnummer(subject.number))
        if not valid:
            raise RegisterError(f"included subject #{index} is not a valid {subject.id_type.value}")
        generator.used.add((subject.id_type.value, subject.number))
    for index in range(persons):
        if index < len(include):
            id_type, number = include[index].id_type.value, include[index].number
        else:
            id_type, number = generator.identifier()
        yield generator.person(index + 1, id_type, number)
