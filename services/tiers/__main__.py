"""`python -m services.tiers`: run the tiers service."""

from services.tiers.app import spec
from shared.service import serve

if __name__ == "__main__":
    serve(spec())
