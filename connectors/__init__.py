"""The outside world: the source register, delivery destinations and the partner configuration.

* :mod:`connectors.register` — :class:`~connectors.register.SourceRegister` (fetch released
  categories, detect shielded subjects), backed by the synthetic register of
  :mod:`connectors.register_models` and :mod:`connectors.register_seed`, or by a fake.
* :mod:`connectors.destinations` — file drop and HTTPS delivery with idempotency keys and receipts.
* :mod:`connectors.partners` — the partners as configuration (YAML), and their destinations.

Connectors import ``legal_bases`` (and ``records.pseudonym``), never ``flows`` or Prefect, so they
run and are tested on their own.
"""
