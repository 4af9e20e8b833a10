"""`python -m services.insight`: run the insight service."""

from services.insight.app import spec
from shared.service import serve

if __name__ == "__main__":
    serve(spec())
