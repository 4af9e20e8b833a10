"""`python -m services.referral`: run the referral service."""

from services.referral.app import spec
from shared.service import serve

if __name__ == "__main__":
    serve(spec())
