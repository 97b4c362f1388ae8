"""Admin pages of the payouts app, one module per page: clients, accumulations, payouts
(and the funded-order page conversion batches reuse), audit events, exchange attempts,
transfers, the currency catalogue and the run-time settings; `support` and `shared` hold
what they share.

Design: pages only read; every change goes through a service (`payouts.operator`,
`payouts.services`) behind a confirmed action or a form with a required reason, so the
locks, transition table and audit trail of the money core apply to people exactly as they
apply to jobs.
"""

from payouts.admin import (  # noqa: F401  (importing registers each page)
    accumulations,
    approvals,
    attempts,
    audit,
    clients,
    currencies,
    orders,
    settings,
    transfers,
)
