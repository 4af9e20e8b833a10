"""`python -m services.earn`: run the earn service."""

import uvicorn

from services.earn.app import create_app
from services.earn.settings import EarnSettings
from shared import logs

if __name__ == "__main__":
    settings = EarnSettings()
    logs.configure("earn", settings.log_level)
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port, log_config=None,
                access_log=False)
