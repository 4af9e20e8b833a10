"""`python -m services.earn`: run the earn service."""

from services.earn.app import spec
from shared.service import serve

if __name__ == "__main__":
    serve(spec())
