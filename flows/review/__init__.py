"""The legal review: the review flow, its form in the Prefect UI, and the escalation notice."""
