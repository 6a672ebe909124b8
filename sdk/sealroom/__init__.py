"""Sealroom: a Python client and command line for the Sealroom data custody and training API.

from sealroom import Client
client = Client()  # SEALROOM_TOKEN and SEALROOM_URL, or what `sealroom login` saved
print(client.whoami().username)
"""

from __future__ import annotations

__version__ = "0.1.0"

from sealroom.client import Client
from sealroom.errors import (
    ApiError,
    AuthenticationError,
    BadRequest,
    ConfigurationError,
    Conflict,
    ConnectionFailed,
    FieldError,
    JobFailed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ReceiptInvalid,
    SealroomError,
    ServerError,
    UnsupportedMediaType,
    ValidationError,
)
from sealroom.models import (
    BaseModel,
    Contribution,
    Job,
    JobMetrics,
    License,
    Listing,
    Me,
    Money,
    Offer,
    Order,
    Quote,
    VerifiedReceipt,
)
from sealroom.receipts import verify_receipt

__all__ = [
    "ApiError",
    "AuthenticationError",
    "BadRequest",
    "BaseModel",
    "Client",
    "ConfigurationError",
    "Conflict",
    "ConnectionFailed",
    "Contribution",
    "FieldError",
    "Job",
    "JobFailed",
    "JobMetrics",
    "License",
    "Listing",
    "Me",
    "Money",
    "NotFound",
    "Offer",
    "Order",
    "PayloadTooLarge",
    "PermissionDenied",
    "Quote",
    "RateLimited",
    "ReceiptInvalid",
    "SealroomError",
    "ServerError",
    "UnsupportedMediaType",
    "ValidationError",
    "VerifiedReceipt",
    "__version__",
    "verify_receipt",
]
