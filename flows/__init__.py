"""The process: Prefect flows, the tasks they sequence, and the ``disclosure`` command line."""
