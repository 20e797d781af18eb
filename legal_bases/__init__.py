"""The law as data: the table of statutory grounds, request validation and the pure assessment.

Nothing here imports Prefect, a database or the network; the same code decides in production, in
replay and in tests.
"""
