"""A structured reference to the article of law a rule rests on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Citation:
    """Where a rule is written: law, BWB id, article, paragraph and a dated url of the text."""

    law: str
    article: str
    url: str
    bwb_id: str | None = None
    paragraph: str | None = None
    juriconnect: str | None = None
    explanation: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Citation:
        return cls(
            law=data["law"],
            article=data["article"],
            url=data["url"],
            bwb_id=data.get("bwb_id"),
            paragraph=data.get("paragraph"),
            juriconnect=data.get("juriconnect"),
            explanation=data.get("explanation"),
        )

    def to_dict(self) -> dict[str, str]:
        out = {"law": self.law, "article": self.article, "url": self.url}
        for key in ("bwb_id", "paragraph", "juriconnect", "explanation"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @property
    def short(self) -> str:
        """A one-line form for people, e.g. ``Participatiewet art. 64 lid 1 onder i``."""
        para = f" lid {self.paragraph}" if self.paragraph else ""
        return f"{self.law} art. {self.article}{para}"
