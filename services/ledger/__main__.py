"""`python -m services.ledger`: run the ledger service."""

import uvicorn

from services.ledger.app import create_app
from services.ledger.settings import LedgerSettings
from shared import logs

if __name__ == "__main__":
    settings = LedgerSettings()
    logs.configure("ledger", settings.log_level)
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port, log_config=None,
                access_log=False)
