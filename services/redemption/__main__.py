"""`python -m services.redemption`: run the redemption service."""

from services.redemption.app import spec
from shared.service import serve

if __name__ == "__main__":
    serve(spec())
