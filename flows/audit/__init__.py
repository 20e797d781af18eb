"""The audit flows: verification of the record, replay, the transparency report (artifacts)."""
