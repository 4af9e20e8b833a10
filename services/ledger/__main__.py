"""`python -m services.ledger`: run the ledger service."""

from services.ledger.app import spec
from shared.service import serve

if __name__ == "__main__":
    serve(spec())
